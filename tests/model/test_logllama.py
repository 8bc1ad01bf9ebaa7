"""LogLLaMA on the real SmolLM2-135M (CPU fp32): folder round trip, detection on raw lines,
and short real training runs (next-key stage and one RL step) on a tiny HDFS set.

Bounded: about 60 short sequences, a handful of optimiser steps; no timing is asserted.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from enricher.cli import main
from model.detector import load_detector, with_label_threshold
from model.errors import ManifestMismatchError, UserError
from model.folder import MANIFEST_FILE
from model.logkeys import LogKeyMap
from model.logllama import (
    KEYMAP_FILE,
    KeyBatch,
    LogLLaMAArchitecture,
    LogLLaMADetector,
    effective_k,
    outside_topk,
    with_top_k,
)
from model.preprocess import HDFS_BLOCK_ID, LogLine, iter_log_lines, sessions_by_key
from tests.fakes import FakeDetector
from tests.model.conftest import FP32
from training.logllama import (
    KeyedData,
    LogLLaMATrainer,
    parse_logllama_config,
    reinforce_loss,
    returns_after,
    reward_mask,
    weighted_rows,
)
from training.shared_data import HDFS_HEAD20K, HDFS_HEAD20K_LABELS

N_TRAIN, N_VAL = 32, 8


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """One thread: on the shared 2-core machine two threads oversubscribe the cores, which made
    these steps several times slower; restored afterwards for the other modules."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def normal_sessions() -> list[list[str]]:
    """Normal HDFS blocks of 4-30 lines from the head file (truncated blocks are fine for a LM)."""
    with HDFS_HEAD20K_LABELS.open(newline="") as handle:
        labels = {row["BlockId"]: row["Label"] for row in csv.DictReader(handle)}
    raw = HDFS_HEAD20K.read_text().splitlines()
    lines = [line for line in iter_log_lines(raw, "hdfs") if isinstance(line, LogLine)]
    sessions, _ = sessions_by_key(lines, HDFS_BLOCK_ID)
    normal = [s.messages for s in sessions if labels.get(s.key) == "Normal" and 4 <= len(s.messages) <= 30]
    return normal[: N_TRAIN + N_VAL]


@pytest.fixture(scope="module")
def keymap(normal_sessions: list[list[str]]) -> LogKeyMap:
    return LogKeyMap.fit(m for s in normal_sessions for m in s)


@pytest.fixture(scope="module")
def detector(keymap: LogKeyMap) -> LogLLaMADetector:
    return LogLLaMADetector.create(LogLLaMAArchitecture(), keymap, k=7, runtime=FP32, seed=0)


@pytest.fixture(scope="module")
def keyed(normal_sessions: list[list[str]], keymap: LogKeyMap) -> KeyedData:
    keys = [tuple(keymap.keys_of(s)) for s in normal_sessions]
    return KeyedData(keymap, keys[:N_TRAIN], [1.0] * N_TRAIN, keys[N_TRAIN:], [1] * N_VAL, ())


def _config(**rl: object) -> object:
    return parse_logllama_config(
        {
            "runtime": {"device": "cpu", "dtype": "float32", "quantize": "off", "batch_size": 16},
            "lm": {"epochs": 1, "max_steps": 5, "eval_every": 5, "batch_size": 6, "lr": 1e-3, "key_lr": 5e-3},
            "rl": {"batch_size": 6, "lr": 1e-4, "key_lr": 1e-3, **rl},
        }
    )


def _perturb(detector: LogLLaMADetector) -> None:
    """Fresh LoRA B matrices are zero, which would make adapter save/load invisible."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in detector.model.decoder.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.05)
        detector.model.key_embed.add_(torch.randn(detector.model.key_embed.shape, generator=generator) * 0.01)


def test_folder_round_trip_keeps_keys_and_verdicts(
    detector: LogLLaMADetector, normal_sessions: list[list[str]], tmp_path: Path
) -> None:
    state = detector.model.trainable_state()
    try:
        _perturb(detector)
        version = detector.save(tmp_path / "ll")
        manifest = json.loads((tmp_path / "ll" / MANIFEST_FILE).read_text())
        assert manifest["detector"] == "logllama" and version == f"logllama-{manifest['version']}"
        size = sum(p.stat().st_size for p in (tmp_path / "ll").iterdir())
        assert size < 5 * 2**20, "a LogLLaMA folder holds adapters and key rows only"
        sample = normal_sessions[:12]
        before = detector.score(sample)
        loaded = load_detector(tmp_path / "ll", FP32)
        assert isinstance(loaded, LogLLaMADetector) and loaded.version == version
        assert loaded.keymap.templates == detector.keymap.templates
        probes = [m for s in normal_sessions for m in s] + ["never seen before"]
        assert loaded.keymap.keys_of(probes) == detector.keymap.keys_of(probes)
        batch = detector.model.make_batch([tuple(detector.keymap.keys_of(s)) for s in sample[:4]])
        with torch.inference_mode():
            torch.testing.assert_close(loaded.model(batch), detector.model(batch), atol=1e-4, rtol=1e-4)
        after = loaded.score(sample)
        assert [(v.label, v.positions) for v in after] == [(v.label, v.positions) for v in before]
    finally:
        detector.model.load_trainable_state(state)


def test_a_folder_whose_key_map_was_edited_is_refused(detector: LogLLaMADetector, tmp_path: Path) -> None:
    detector.save(tmp_path / "ll")
    path = tmp_path / "ll" / KEYMAP_FILE
    path.write_text(path.read_text().replace("Receiving", "Receivin"))
    with pytest.raises(Exception, match="does not match its hash"):
        load_detector(tmp_path / "ll", FP32)


def test_a_folder_for_another_decoder_is_refused(detector: LogLLaMADetector, tmp_path: Path) -> None:
    detector.save(tmp_path / "ll")
    manifest = json.loads((tmp_path / "ll" / MANIFEST_FILE).read_text())
    manifest["base_models"]["decoder"]["hidden_size"] = 4096
    with pytest.raises(ManifestMismatchError, match="trained on decoder"):
        LogLLaMADetector.load(tmp_path / "ll", manifest, FP32)


def test_an_unseen_line_is_flagged_at_its_position(detector: LogLLaMADetector, normal_sessions: list[list[str]]) -> None:
    session = list(normal_sessions[0])
    session.insert(2, "Disk quota exceeded on volume /data/7 while writing blk_1")  # no such template in training
    verdict = detector.score([session])[0]
    assert verdict.label == 1 and 2 in verdict.positions
    assert verdict.score > 0.99 and "<unk>" in verdict.answer and "(unseen)" in verdict.answer
    # The continuous score ranks every sequence, normal ones too: below an unseen key's.
    normal = detector.score([normal_sessions[0]])[0]
    assert 0 < normal.score < verdict.score and "least likely" in normal.answer
    assert detector.score([[]])[0].label == 0
    # Cached verdicts are the same objects' values.
    assert detector.score([session])[0] == verdict
    # The unseen key is the least likely one: the score is about its line.
    assert verdict.score_positions == (2,)


def test_smallest_passing_ks_agree_with_the_verdicts_at_every_k(
    detector: LogLLaMADetector, normal_sessions: list[list[str]]
) -> None:
    sessions = [*normal_sessions[:12], [*normal_sessions[0][:3], "Disk quota exceeded on volume /data/7"]]
    keys = [tuple(detector.keymap.keys_of(s)) for s in sessions]
    needed = detector.smallest_passing_ks([*keys, ()])
    assert needed[-2] == math.inf and needed[-1] == 0  # an unseen key never passes; nothing to check
    assert with_top_k(detector, None, "--top-k") is detector
    for k in (1, 3, detector.k):
        at_k = with_top_k(detector, k, "--top-k")  # same weights, its own cache and version
        assert at_k.version == f"{detector.version}-k{k}" and at_k.k == k
        assert [v.label for v in at_k.score_keys(keys)] == [int(n > k) for n in needed[:-1]]
    assert with_top_k(detector, 1000, "--top-k").k == effective_k(1000, detector.keymap.n_keys) < 1000  # capped


def test_evaluating_a_folder_reports_the_rule_at_every_k(
    detector: LogLLaMADetector, normal_sessions: list[list[str]], tmp_path: Path
) -> None:
    """`logllm eval` on a LogLLaMA folder: the K sweep's row at the folder's K is the rule's own
    result, flags only fall as K grows, and report.md shows the table."""
    from training.config import TrainConfig
    from training.data import LabelledSequence, Split
    from training.train import evaluate_run

    detector.save(tmp_path / "ll")
    sessions = [*normal_sessions[:10], [*normal_sessions[0][:3], "Disk quota exceeded on volume /data/7"]]
    labels = [0] * 5 + [1] * 6  # five normal sessions labelled anomalous: true and false positives both
    test = tuple(LabelledSequence(f"s{i}", tuple(s), y, i) for i, (s, y) in enumerate(zip(sessions, labels, strict=True)))
    report = evaluate_run(
        tmp_path / "ll", Split((), test, "hand-built"), TrainConfig(runtime=FP32, baseline=False), tmp_path / "eval",
        title="tiny", context={}, progress=False,
    )
    sweep = report["k_sweep"]
    assert report["label_rule"].startswith(f"Top-K rule, K = {detector.k} ")
    assert report["k"] == detector.k and [r["k"] for r in sweep] == list(range(1, effective_k(10**6, detector.keymap.n_keys) + 1))
    counts = ("tp", "fp", "fn", "tn")
    assert [sweep[detector.k - 1][c] for c in counts] == [report["results"]["logllama"][c] for c in counts]
    assert all(sum(r[c] for c in counts) == len(test) for r in sweep)
    flagged = [r["tp"] + r["fp"] for r in sweep]
    assert flagged == sorted(flagged, reverse=True) and all(r["tp"] >= 1 for r in sweep)  # the unseen line, at every K
    assert f"| **{detector.k}** |" in (tmp_path / "eval" / "report.md").read_text()


def test_top_k_is_refused_for_a_detector_without_a_top_k_rule() -> None:
    with pytest.raises(UserError, match=r"LOGLLM_SCORING__TOP_K 5: only a LogLLaMA folder .* this one is fake; unset it"):
        with_top_k(FakeDetector(), 5, "LOGLLM_SCORING__TOP_K")


def test_the_score_points_at_the_least_likely_line_the_answer_names(
    detector: LogLLaMADetector, normal_sessions: list[list[str]]
) -> None:
    sessions = normal_sessions[:20]
    for session, verdict in zip(sessions, detector.score(sessions), strict=True):
        (line,) = verdict.score_positions
        named = verdict.answer.split("least likely ")[1]
        # The end of a session is reported at its last line, as the rule's positions are.
        assert line == (len(session) - 1 if named.startswith("end of sequence") else int(named[1:].split()[0]))
    # A label threshold that flags them all keeps the rule's lines where it has them.
    flagged = with_label_threshold(detector, 0.0).score(sessions)
    assert [v.positions for v in flagged] == [v.positions or v.score_positions for v in detector.score(sessions)]


def test_training_lowers_the_next_key_loss_and_rl_raises_the_reward(
    detector: LogLLaMADetector, keyed: KeyedData
) -> None:
    state = detector.model.trainable_state()
    try:
        trainer = LogLLaMATrainer(_config(), detector, keyed, show_progress=False)  # type: ignore[arg-type]
        record = trainer.train_lm()
        first, best = record.curve[0], record.best
        assert best["val_nll"] < first["val_nll"] - 0.1, record.curve
        assert record.steps == 5

        # RL on the same tiny set with a tight reward (K = 2) so the reward can still rise.
        trainer.reward_k = 2
        model = detector.model
        batch = model.make_batch(keyed.train[:6])
        rewarded = reward_mask(batch.targets, batch.checked, model.unk, 0.2)

        def mean_reward() -> float:
            with torch.no_grad():
                model.eval()
                outside = outside_topk(model(batch).reshape(-1, model.n_keys + 2), batch.targets.clamp(min=0).reshape(-1), 2)
            hits = (~outside.reshape(batch.targets.shape) & rewarded).sum()
            return float(2 * hits / rewarded.sum() - 1)

        before = mean_reward()
        assert before < 1.0, "the reward must have room to rise"
        optimizer = torch.optim.AdamW(
            [{"params": model.lora_parameters(), "lr": 1e-4}, {"params": model.key_parameters(), "lr": 1e-3}]
        )
        for _ in range(2):
            trainer.reinforce_step(batch, optimizer)
        assert mean_reward() > before
    finally:
        detector.model.load_trainable_state(state)


def test_ppo_acts_on_generated_contexts() -> None:
    """PPO's actions are the keys the model samples, so it defaults to generated contexts and
    refuses teacher forcing (where a baseline would push normal observed keys down)."""
    assert _config(algorithm="ppo").rl.context == "generated"  # type: ignore[attr-defined]
    with pytest.raises(UserError, match='rl.context = "generated"'):
        _config(algorithm="ppo", context="observed")


def test_an_action_earns_the_rewards_of_the_predictions_after_it() -> None:
    rewards = torch.tensor([[1.0, -1.0, 1.0, 1.0], [0.0, 1.0, 0.0, -1.0]])
    assert torch.equal(returns_after(rewards, 1.0), torch.tensor([[1.0, 2.0, 1.0, 0.0], [0.0, -1.0, -1.0, 0.0]]))
    assert torch.allclose(returns_after(rewards, 0.5)[0], torch.tensor([-1.0 + 0.5 + 0.25, 1.5, 1.0, 0.0]))


def test_ppo_step_with_value_head_is_finite_and_moves_the_policy(detector: LogLLaMADetector, keyed: KeyedData) -> None:
    state = detector.model.trainable_state()
    try:
        config = _config(algorithm="ppo", ppo={"epochs": 1})
        trainer = LogLLaMATrainer(config, detector, keyed, show_progress=False)  # type: ignore[arg-type]
        model = detector.model
        value_head = torch.nn.Linear(model.dim, 1)
        optimizer = torch.optim.AdamW(
            [
                {"params": model.lora_parameters(), "lr": 1e-4},
                {"params": model.key_parameters(), "lr": 1e-3},
                {"params": list(value_head.parameters()), "lr": 1e-3},
            ]
        )
        batch = trainer.generated(model.make_batch(keyed.train[:4]), torch.Generator().manual_seed(3))
        stats = trainer.ppo_step(batch, optimizer, value_head, model.trainable_state())
        assert all(torch.isfinite(torch.tensor(v)) for v in stats.values())
        assert stats["kl"] >= 0
        assert not torch.equal(model.key_embed, state["key_embed"])
    finally:
        detector.model.load_trainable_state(state)


def test_likelihood_control_replays_the_rl_draws_for_exactly_the_given_episodes(
    detector: LogLLaMADetector, keyed: KeyedData
) -> None:
    """The equal-budget control: same sequence draws and batches as the RL stage, a fixed number
    of episodes (no early stop), the plain next-key loss, best kept by validation NLL."""
    state = detector.model.trainable_state()
    try:
        config = _config(episodes=2, sequences_per_episode=6, control=True)
        trainer = LogLLaMATrainer(config, detector, keyed, show_progress=False)  # type: ignore[arg-type]
        draws = trainer.rng.bit_generator.state
        rl = trainer.train_rl()
        detector.model.load_trainable_state(state)
        trainer.rng.bit_generator.state = draws
        control = trainer.train_rl(likelihood_control_episodes=len(rl.curve) - 1)
        assert control.name == "lm-continued" and rl.name == "rl-reinforce"
        assert (control.steps, control.sequences) == (rl.steps, rl.sequences)
        assert [row["episode"] for row in control.curve] == [row["episode"] for row in rl.curve]
        assert control.best["val_nll"] == min(row["val_nll"] for row in control.curve)
        # Likelihood training on the same draws lowers the validation NLL of the untrained model.
        assert control.best["val_nll"] < control.curve[0]["val_nll"]
    finally:
        detector.model.load_trainable_state(state)



def test_weighted_rows_give_the_loss_of_all_the_copies(detector: LogLLaMADetector, keyed: KeyedData) -> None:
    """dedupe = true trains on distinct sequences as weighted rows: over the rows of an epoch,
    the loss (and so the gradient) is that of all the copies themselves."""
    model = detector.model
    a, b = keyed.train[0], keyed.train[1]
    rows, weights = weighted_rows([a, b], [40, 3], max_weight=16)
    assert rows == [a, a, a, b]
    copies = [a] * 40 + [b] * 3
    mean_targets = sum(w * (len(r) + 1) for r, w in zip(rows, weights, strict=True)) / sum(weights)
    model.eval()  # dropout off: the copies would otherwise draw different masks
    with torch.no_grad():
        every_copy = model.make_batch(copies)
        weighted = model.make_batch(rows, weights)
        torch.testing.assert_close(
            model.next_key_loss(model(weighted), weighted, mean_targets), model.next_key_loss(model(every_copy), every_copy)
        )
        rewarded_c = reward_mask(every_copy.targets, every_copy.checked, model.unk, 0.2)
        rewarded_w = reward_mask(weighted.targets, weighted.checked, model.unk, 0.2)
        copied, _ = reinforce_loss(model(every_copy), every_copy.targets, rewarded_c, 7, 10.0, 0.01)
        once, _ = reinforce_loss(model(weighted), weighted.targets, rewarded_w, 7, 10.0, 0.01, weighted.weights)
        torch.testing.assert_close(once, copied)


def test_generated_contexts_keep_the_prompt_and_sample_only_keys(detector: LogLLaMADetector, keyed: KeyedData) -> None:
    model = detector.model
    model.eval()
    batch = model.make_batch(keyed.train[:6])
    prompt = torch.tensor([0, 1, 2, 3, 100, 2])  # 100: longer than the sequence, nothing sampled
    first = model.sample_contexts(batch, prompt, torch.Generator().manual_seed(5))
    again = model.sample_contexts(batch, prompt, torch.Generator().manual_seed(5))
    assert torch.equal(first.inputs, again.inputs), "a fixed generator gives the same contexts"
    assert torch.equal(first.targets, batch.targets) and torch.equal(first.mask, batch.mask)
    positions = torch.arange(batch.inputs.shape[1]).unsqueeze(0)
    kept = (positions <= prompt.unsqueeze(1)) | (batch.mask == 0)
    assert torch.equal(first.inputs[kept], batch.inputs[kept])
    sampled = first.inputs[~kept]
    assert sampled.numel() > 0 and bool((sampled < model.n_keys).all()), "only keys: never unk, end or start"
    assert not torch.equal(first.inputs, batch.inputs)


def test_rl_on_generated_contexts_trains_and_validates_on_them(detector: LogLLaMADetector, keyed: KeyedData) -> None:
    state = detector.model.trainable_state()
    try:
        config = _config(context="generated", episodes=1, sequences_per_episode=6)
        trainer = LogLLaMATrainer(config, detector, keyed, show_progress=False)  # type: ignore[arg-type]
        observed = LogLLaMATrainer(_config(), detector, keyed, show_progress=False)  # type: ignore[arg-type]
        # The validation RL loss is measured on sampled contexts, with a fixed stream.
        assert trainer.validate() == trainer.validate()
        assert trainer.validate()["val_rl_loss"] != observed.validate()["val_rl_loss"]
        seen: list[KeyBatch] = []
        step = trainer.reinforce_step
        trainer.reinforce_step = lambda batch, optimizer: seen.append(batch) or step(batch, optimizer)  # type: ignore[method-assign]
        record = trainer.train_rl()
        assert record.steps == 1 and record.sequences == 6 and len(record.curve) == 2
        # The step saw sampled inputs before the observed targets, not the observed sequences.
        start = detector.model.start
        observed = {(start, *keys) for keys in keyed.train}
        rows = [tuple(row[: int(mask.sum())].tolist()) for row, mask in zip(seen[0].inputs, seen[0].mask, strict=True)]
        targets = {tuple(row[row >= 0].tolist()) for row in seen[0].targets}
        assert targets <= {(*keys, detector.model.eos) for keys in keyed.train}
        assert any(row not in observed for row in rows)
    finally:
        detector.model.load_trainable_state(state)


def test_logllm_score_names_the_file_lines_a_logllama_folder_points_at(
    detector: LogLLaMADetector, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    detector.save(tmp_path / "ll")
    lines = HDFS_HEAD20K.read_text().splitlines()[:300]
    block = HDFS_BLOCK_ID.findall(lines[0])[0]
    lines.insert(2, f"081109 203518 143 INFO dfs.DataNode: Disk quota exceeded on volume /data/7 while writing {block}")
    log = tmp_path / "hdfs.log"
    log.write_text("\n".join(lines) + "\n")
    out = tmp_path / "scores.jsonl"
    argv = ["score", "--model", str(tmp_path / "ll"), "--format", "hdfs", "--device", "cpu", "--dtype", "float32"]
    assert main([*argv, str(log), "-o", str(out)]) == 0
    records = {r["sequence"]: r for r in map(json.loads, out.read_text().splitlines())}
    members = {key: [n for n, line in enumerate(lines, start=1) if key in HDFS_BLOCK_ID.findall(line)] for key in records}
    for key, record in records.items():
        assert set(record["top_lines"]) <= set(members[key])
        assert bool(record["top_lines"]) == (record["label"] == "anomalous")
    # The unseen line is file line 3 (1-based): its block points at it.
    assert records[block]["label"] == "anomalous" and 3 in records[block]["top_lines"]
    assert "cache hit ratio" in capsys.readouterr().err
    # --top-k 1: the same model under a stricter rule flags every block the folder's K flags, and
    # says so in the version.
    assert main([*argv, "--top-k", "1", str(log), "-o", str(tmp_path / "k1.jsonl")]) == 0
    strict = {r["sequence"]: r for r in map(json.loads, (tmp_path / "k1.jsonl").read_text().splitlines())}
    assert {r["model_version"] for r in strict.values()} == {f"{records[block]['model_version']}-k1"}
    flagged = {key for key, r in records.items() if r["label"] == "anomalous"}
    assert flagged <= {key for key, r in strict.items() if r["label"] == "anomalous"}


def test_logllm_train_learns_from_logs_without_labels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`data.assume_normal`: a raw log with no label file trains end to end; the report counts
    the held-out sequences flagged and lists the most surprising first, with their lines."""
    lines = HDFS_HEAD20K.read_text().splitlines()[:3000]
    late_block = HDFS_BLOCK_ID.findall(lines[-1])[0]  # in the chronological test split
    unseen = f"081109 213518 143 INFO dfs.DataNode: Disk quota exceeded on volume /data/7 while writing {late_block}"
    log = tmp_path / "app.log"
    log.write_text("\n".join([*lines, unseen]) + "\n")
    config = tmp_path / "llama.toml"
    config.write_text(
        f'detector = "logllama"\noutput = "{tmp_path / "run"}"\n'
        f'[data]\nkind = "raw"\npath = "{log}"\nformat = "hdfs"\nsession_regex = \'blk_-?\\d+\'\nassume_normal = true\n'
        '[runtime]\ndevice = "cpu"\ndtype = "float32"\nquantize = "off"\n'
        "[lm]\nmax_steps = 4\neval_every = 4\n[rl]\nepisodes = 1\nsequences_per_episode = 8\n"
    )
    assert main(["train", "--config", str(config), "--threads", "1"]) == 0
    err = capsys.readouterr().err
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    result = report["with_rl"]
    assert report["labelled"] is False and "f1" not in result and "precision" not in result
    assert f"flags {result['flagged']} of {result['sequences']} held-out sequences" in err
    assert result["flagged_share"] == round(result["flagged"] / result["sequences"], 6)
    at_k = {row["k"]: row["flagged"] for row in result["k_sweep"]}
    assert at_k[report["k"]] == result["flagged"]
    assert list(at_k.values()) == sorted(at_k.values(), reverse=True)
    first, *rest = result["most_surprising"]
    assert first["sequence"] == late_block and first["flagged"]
    assert unseen.split("INFO dfs.DataNode: ")[1] in [line["message"] for line in first["lines"]]
    scores = [s["score"] for s in result["most_surprising"]]
    assert scores == sorted(scores, reverse=True) and len(rest) == 19
