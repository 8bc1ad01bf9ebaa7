"""LogLLM on the real small pair (MiniLM-L6 encoder, SmolLM2-135M decoder), CPU fp32."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from model.backbones import choose_placement
from model.detector import RuntimeSettings, load_detector
from model.errors import ManifestMismatchError, UserError
from model.folder import MANIFEST_FILE, read_manifest, read_weights, write_detector_folder
from model.logllm import ANOMALOUS, NORMAL, parse_answer
from model.logllm_detector import LogLLMDetector
from model.preprocess import HDFS_BLOCK_ID, LogLine, iter_log_lines, sessions_by_key
from tests.model.conftest import FP32, SMALL_ARCH
from training.shared_data import HDFS_HEAD20K

MESSAGES = [
    "Receiving block <*> src: <*> dest: <*>",
    "PacketResponder <*> for block <*> terminating",
    "Verification succeeded for <*>",
]


def _hdfs_sessions(limit_lines: int) -> list[list[str]]:
    raw = HDFS_HEAD20K.read_text().splitlines()[:limit_lines]
    lines = [line for line in iter_log_lines(raw, "hdfs") if isinstance(line, LogLine)]
    sessions, _ = sessions_by_key(lines, HDFS_BLOCK_ID)
    return [s.messages for s in sessions]


def test_dimensions_come_from_the_model_configs(small_detector: tuple[LogLLMDetector, Path]) -> None:
    model = small_detector[0].model
    assert (model.encoder_dim, model.decoder_dim) == (384, 576)
    assert tuple(model.projector.weight.shape) == (576, 384)
    assert model.projector.weight.dtype == torch.float32


def test_shapes_and_dtypes_through_the_models(small_detector: tuple[LogLLMDetector, Path]) -> None:
    model = small_detector[0].model
    with torch.inference_mode():
        vectors = model.encode_messages(MESSAGES)
        projected = model.project(vectors)
        embeds, mask = model.build_inputs([projected, projected[:1]], [model.answer_prefix_ids] * 2)
    assert vectors.shape == (3, 384) and vectors.dtype == torch.float32
    assert projected.shape == (3, 576) and projected.dtype == model.decoder.get_input_embeddings().weight.dtype
    expected_len = len(model.prefix_ids) + 3 + len(model.suffix_ids) + len(model.answer_prefix_ids)
    assert embeds.shape == (2, expected_len, 576)
    assert mask[0].all() and mask[1].sum() == expected_len - 2


def test_encoder_output_is_order_independent(small_detector: tuple[LogLLMDetector, Path]) -> None:
    """encode_messages sorts by length for batching; results must come back in input order."""
    model = small_detector[0].model
    with torch.inference_mode():
        together = model.encode_messages(MESSAGES, batch_size=2)
        one_by_one = torch.cat([model.encode_messages([m]) for m in MESSAGES])
    torch.testing.assert_close(together, one_by_one, atol=1e-5, rtol=1e-4)


def test_prompt_layout_places_message_vectors_between_prefix_and_suffix(
    small_detector: tuple[LogLLMDetector, Path],
) -> None:
    model = small_detector[0].model
    embed = model.decoder.get_input_embeddings()
    ids = model.prompt_token_ids()
    tok = model.decoder_tokenizer
    # BOS once, explicitly, and the literal backslash-n of the official prompt.
    assert ids["prefix"][0] == tok.bos_token_id and ids["prefix"].count(tok.bos_token_id) == 1
    assert tok.decode(ids["suffix"]) == ". Is this sequence normal or anomalous? \\n"
    assert tok.decode(ids["answer_normal"]) == "The sequence is normal."
    with torch.inference_mode():
        long_seq = model.project(model.encode_messages(MESSAGES))
        short_seq = long_seq[:1]
        embeds, mask = model.build_inputs([long_seq, short_seq], [ids["answer_prefix"]] * 2)
        pad = 2  # the short row is two messages shorter
        row = embeds[1]
        assert torch.count_nonzero(row[:pad]) == 0 and mask[1, :pad].sum() == 0
        p = len(ids["prefix"])
        torch.testing.assert_close(row[pad : pad + p], embed(torch.tensor(ids["prefix"])))
        torch.testing.assert_close(row[pad + p], short_seq[0])
        s = len(ids["suffix"])
        torch.testing.assert_close(row[pad + p + 1 : pad + p + 1 + s], embed(torch.tensor(ids["suffix"])))
        torch.testing.assert_close(row[-len(ids["answer_prefix"]) :], embed(torch.tensor(ids["answer_prefix"])))
        torch.testing.assert_close(embeds[0, p : p + 3], long_seq)


def test_greedy_loop_matches_transformers_generate(small_detector: tuple[LogLLMDetector, Path]) -> None:
    """Our KV-cached greedy loop produces the tokens HF generate produces (unpadded row)."""
    model = small_detector[0].model
    with torch.inference_mode():
        seq = model.project(model.encode_messages(MESSAGES))
        texts, _ = model.generate([seq])
        embeds, mask = model.build_inputs([seq], [model.answer_prefix_ids])
        reference = model.decoder.generate(
            inputs_embeds=embeds, attention_mask=mask, max_new_tokens=6, do_sample=False, pad_token_id=model.eos_id
        )
    ref_text = model.decoder_tokenizer.decode(reference[0], skip_special_tokens=True)
    # Ours stops as soon as the answer is decided; the reference runs all 6 tokens.
    assert ref_text.startswith(texts[0])
    assert parse_answer(ref_text) == parse_answer(texts[0])


def test_answer_loss_is_finite_and_backpropagates_to_trainable_parts(
    small_detector: tuple[LogLLMDetector, Path],
) -> None:
    model = small_detector[0].model
    projected = model.project(model.encode_messages(MESSAGES))
    loss = model.answer_loss([projected, projected[:2]], [ANOMALOUS, NORMAL])
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    assert model.projector.weight.grad is not None and model.projector.weight.grad.abs().sum() > 0
    model.zero_grad(set_to_none=True)


def test_parse_answer_follows_the_official_rule() -> None:
    assert parse_answer(" anomalous.") == (ANOMALOUS, False)
    assert parse_answer(" normal.") == (NORMAL, False)
    assert parse_answer(" Anomalous.") == (NORMAL, False)  # only exact lower-case counts
    assert parse_answer(" abnormal") == (NORMAL, False)  # "abnormal" contains "normal"
    assert parse_answer(": 1.1.") == (NORMAL, True)


def test_save_load_round_trip_gives_identical_scores(small_detector: tuple[LogLLMDetector, Path]) -> None:
    detector, folder = small_detector
    sessions = _hdfs_sessions(1500)
    before = detector.score(sessions)
    loaded = load_detector(folder, FP32)
    after = loaded.score(sessions)
    assert loaded.version == detector.version == f"logllm-{read_manifest(folder)['version']}"
    assert [(v.label, v.score, v.answer) for v in after] == [(v.label, v.score, v.answer) for v in before]
    assert all(0.0 <= v.score <= 1.0 for v in after)


def test_caches_change_speed_not_results(small_detector: tuple[LogLLMDetector, Path]) -> None:
    _, folder = small_detector
    sessions = _hdfs_sessions(3000)
    cached = load_detector(folder, FP32)
    uncached = load_detector(folder, FP32.model_copy(update={"embedding_cache_size": 0, "verdict_cache_size": 0}))
    first = cached.score(sessions)
    stats = cached.cache_stats()
    # HDFS blocks repeat the same few cleaned messages and sequences.
    assert stats["embedding"]["hit_ratio"] > 0.9
    assert stats["verdict"]["hit_ratio"] > 0.5
    second = cached.score(sessions)
    assert cached.cache_stats()["verdict"]["hits"] == stats["verdict"]["hits"] + len(sessions)
    plain = uncached.score(sessions)
    assert uncached.cache_stats()["embedding"]["hits"] == 0
    for a, b, c in zip(first, second, plain, strict=True):
        assert a == b
        assert (a.label, a.answer) == (c.label, c.answer)
        assert a.score == pytest.approx(c.score, abs=1e-5)  # batch composition differs


def test_manifest_mismatch_is_refused(small_detector: tuple[LogLLMDetector, Path], tmp_path: Path) -> None:
    _, folder = small_detector
    manifest = read_manifest(folder)
    weights = {name: read_weights(folder, name) for name in manifest["weights"]}
    body = {k: v for k, v in manifest.items() if k not in ("version", "weights", "format_version")}
    body["base_models"] = {**body["base_models"], "decoder": {**body["base_models"]["decoder"], "hidden_size": 4096}}
    write_detector_folder(tmp_path / "other", body, weights)
    with pytest.raises(ManifestMismatchError, match="decoder .* trained on"):
        load_detector(tmp_path / "other", FP32)


def test_unknown_detector_kind_and_corrupt_folder(small_detector: tuple[LogLLMDetector, Path], tmp_path: Path) -> None:
    write_detector_folder(tmp_path / "x", {"detector": "mystery"}, {})
    with pytest.raises(UserError, match="unknown detector 'mystery'"):
        load_detector(tmp_path / "x")
    manifest = json.loads((small_detector[1] / MANIFEST_FILE).read_text())
    assert manifest["detector"] == "logllm"


def test_4bit_is_refused_without_cuda() -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA present: the refusal path only exists on CPU-only machines")
    with pytest.raises(UserError, match="needs a CUDA device"):
        choose_placement("auto", "auto", "nf4")
    assert not choose_placement("auto", "float32", "auto").quantize_4bit


@pytest.mark.gpu
def test_4bit_nf4_loading_on_cuda() -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device: 4-bit NF4 loading runs only on GPU machines")
    detector = LogLLMDetector.create(SMALL_ARCH, RuntimeSettings(device="cuda", quantize="nf4"))
    import bitsandbytes as bnb

    assert any(isinstance(m, bnb.nn.Linear4bit) for m in detector.model.decoder.modules())
    verdicts = detector.score([MESSAGES])
    assert 0.0 <= verdicts[0].score <= 1.0


def test_cli_scores_a_real_file_end_to_end(small_detector: tuple[LogLLMDetector, Path], tmp_path: Path) -> None:
    _, folder = small_detector
    log = tmp_path / "hdfs.log"
    log.write_text("\n".join(HDFS_HEAD20K.read_text().splitlines()[:2000]) + "\nnot an hdfs line\n")
    out = tmp_path / "scores.jsonl"
    proc = subprocess.run(
        [sys.executable, "-m", "enricher.cli", "score", "--model", str(folder), "--format", "hdfs",
         "--device", "cpu", "--dtype", "float32", str(log), "-o", str(out)],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    expected_blocks = {m for line in log.read_text().splitlines()[:2000] for m in HDFS_BLOCK_ID.findall(line)}
    assert {r["sequence"] for r in records} == expected_blocks
    assert len(records) == len(expected_blocks)
    assert sum(r["lines"] for r in records) == 2000
    assert all(r["label"] in ("normal", "anomalous") and 0 <= r["score"] <= 1 for r in records)
    assert all(r["top_lines"] == [] for r in records)  # LogLLM answers per sequence, pointing at no line
    assert "1 lines do not match --format hdfs" in proc.stderr
    assert "cache hit ratio" in proc.stderr
    # bitsandbytes' advice to install `kernels` (a CPU 4-bit kernel this project never uses) is
    # not shown; it appears on CPUs with AVX-512-bf16 when the cuda extra is installed.
    assert "pip install kernels" not in proc.stderr


def test_cli_reports_a_missing_model_folder(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "enricher.cli", "score", "--model", str(tmp_path / "none"), str(HDFS_HEAD20K)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert "does not exist" in proc.stderr and "Traceback" not in proc.stderr


def test_cli_refuses_a_label_threshold_outside_the_scores_before_loading_a_model(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "enricher.cli", "score", "--model", str(tmp_path / "none"), "--label-threshold", "2",
         str(HDFS_HEAD20K)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert "--label-threshold 2.0: scores are in [0, 1]" in proc.stderr and "does not exist" not in proc.stderr
