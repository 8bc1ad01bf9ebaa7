"""Training LogLLM on the real small pair (MiniLM + SmolLM2), CPU fp32, on tiny real HDFS data.

Bounded: a handful of blocks of a few lines each, micro-batches of 2, a few optimiser steps.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from model.detector import load_detector
from model.errors import UserError
from model.logllm import LogLLMArchitecture
from model.logllm_detector import LogLLMDetector
from model.preprocess import HDFS_BLOCK_ID, normalize_sequence
from tests.model.conftest import FP32, SMALL_ARCH
from training.config import PAPER_STAGES, DataConfig, OptimConfig, SamplerConfig, StageConfig, TrainConfig
from training.evaluate import read_metrics
from training.shared_data import HDFS_HEAD20K, HDFS_HEAD20K_LABELS
from training.stages import freeze_for_stage, group_of
from training.train import METRICS, StepInfo, train

LINES_PER_BLOCK = 4


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """One torch thread for these tests, restored afterwards. On a busy 2-core machine two
    threads spend most of each small op waiting at OpenMP barriers (5-10x slower), and one
    fixed thread count keeps the resume comparison bit-exact."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def tiny_hdfs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """10 anomalous and 10 normal HDFS_head20k blocks, each cut to its first 4 lines."""
    with HDFS_HEAD20K_LABELS.open() as handle:
        labels = {row["BlockId"]: row["Label"] for row in csv.DictReader(handle)}
    kept: dict[str, list[str]] = {}
    quota = {"Anomaly": 10, "Normal": 10}
    for line in HDFS_HEAD20K.read_text().splitlines():
        blocks = HDFS_BLOCK_ID.findall(line)
        if not blocks:
            continue
        block = blocks[0]
        if block not in kept:
            if quota[labels[block]] == 0:
                continue
            quota[labels[block]] -= 1
            kept[block] = []
        if len(kept[block]) < LINES_PER_BLOCK:
            kept[block].append(line)
    folder = tmp_path_factory.mktemp("tiny-hdfs")
    log = folder / "tiny.log"
    log.write_text("".join(line + "\n" for lines in kept.values() for line in lines))
    label_file = folder / "labels.csv"
    label_file.write_text("BlockId,Label\n" + "".join(f"{b},{labels[b]}\n" for b in kept))
    return log, label_file


def _config(tiny: tuple[Path, Path], output: Path, stages: list[StageConfig], **extra: object) -> TrainConfig:
    log, labels = tiny
    settings: dict[str, object] = {"evaluate": False, "baseline": False, **extra}
    return TrainConfig(
        data=DataConfig(kind="raw", path=log, format="hdfs", session_regex=HDFS_BLOCK_ID.pattern, labels=labels,
                        split="random", test_ratio=0.25),
        runtime=FP32,
        stages=stages,
        optim=OptimConfig(micro_batch=2, accumulation=2),
        output=output,
        **settings,  # type: ignore[arg-type]
    )


# ------------------------------------------------------------------------------------ freezing


@pytest.fixture(scope="module")
def fresh_detector() -> Iterator[LogLLMDetector]:
    """A fresh detector with non-zero LoRA B matrices, so every LoRA A matrix gets a non-zero
    gradient when its adapter trains (with B = 0, dL/dA is exactly 0)."""
    detector = LogLLMDetector.create(SMALL_ARCH, FP32, seed=0)
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, param in detector.model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.05)
    yield detector


@pytest.mark.parametrize("stage", PAPER_STAGES, ids=lambda s: f"stage-{s.name}")
def test_each_stage_gives_gradients_to_exactly_its_parts(fresh_detector: LogLLMDetector, stage: StageConfig) -> None:
    model = fresh_detector.model
    freeze_for_stage(model, stage.trains)
    encoder_training = model.encoder.training
    messages = ["Receiving block <*> src: <*> dest: <*>", "PacketResponder <*> for block <*> terminating"]
    if "encoder_lora" in stage.trains:
        vectors = model.encode_messages(messages)
    else:
        vectors = fresh_detector.embed(messages)  # the cache path: no encoder graph at all
    projected = model.project(vectors)
    model.answer_loss([projected, projected[:1]], [1, 0]).backward()
    got = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    frozen_with_grad = {n for n, p in model.named_parameters() if not p.requires_grad and p.grad is not None}
    expected = {n for n, _ in model.named_parameters() if group_of(n) in stage.trains}
    model.zero_grad(set_to_none=True)
    model.eval()
    assert got == expected
    assert not frozen_with_grad
    # A frozen encoder runs in eval mode (no dropout), so its vectors can come from the cache.
    assert encoder_training == ("encoder_lora" in stage.trains)


# ------------------------------------------------------------------------------------ runs

RESUME_STAGES = [
    StageConfig(name="1", trains=["decoder_lora"], lr=5e-4, samples=8),  # steps 1-2
    StageConfig(name="2-1", trains=["projector"], lr=5e-4, samples=8),  # steps 3-4
    StageConfig(name="2-2", trains=["projector", "encoder_lora"], lr=5e-5, samples=4),  # step 5
    StageConfig(name="3", trains=["projector", "encoder_lora", "decoder_lora"], lr=5e-5, samples=6, epochs=2),  # 6-9
]


class Crash(Exception):
    pass


def _crash_at(step: int):  # type: ignore[no-untyped-def]
    def on_step(info: StepInfo) -> None:
        if info.global_step == step:
            raise Crash(f"simulated crash after step {step}")

    return on_step


def _final_state(output: Path) -> dict[str, torch.Tensor]:
    folder = output / "detector"
    return {f"{f}:{k}": v for f in ("projector", "decoder_lora", "encoder_lora")
            for k, v in load_file(str(folder / f"{f}.safetensors")).items()}


def _losses(output: Path) -> list[tuple[int, str, float]]:
    return [(r["step"], r["stage"], r["loss"]) for r in read_metrics(output / METRICS) if r.get("event") == "step"]


def test_resume_after_crashes_equals_an_uninterrupted_run(tiny_hdfs: tuple[Path, Path], tmp_path: Path) -> None:
    """Crash inside stage 2-2 (last checkpoint: the end of stage 2-1) and inside stage 3 (last
    checkpoint: mid-stage, with AdamW and scheduler state); the resumed run must replay the same
    losses and end with bit-identical weights. Every stage keeps less than the 15-sample pool,
    drawn distinct-first as the shipped CPU recipes do."""
    sampler = SamplerConfig(cap_order="distinct_first")
    straight = _config(tiny_hdfs, tmp_path / "straight", RESUME_STAGES, checkpoint_every=2, sampler=sampler)
    train(straight, progress=False)

    resumed = straight.model_copy(update={"output": tmp_path / "resumed"})
    with pytest.raises(Crash):
        train(resumed, progress=False, on_step=_crash_at(5))  # step 5 is not checkpointed
    with pytest.raises(Crash):
        train(resumed, progress=False, on_step=_crash_at(8))  # stage 3 step 3; checkpoint at its step 2
    run = train(resumed, progress=False)

    assert _losses(tmp_path / "resumed") == _losses(tmp_path / "straight")
    assert [s for s, _, _ in _losses(tmp_path / "straight")] == list(range(1, 10))
    a, b = _final_state(tmp_path / "straight"), _final_state(tmp_path / "resumed")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert [s["stage"] for s in run.stages] == ["1", "2-1", "2-2", "3"]
    assert sorted(p.name for p in (tmp_path / "resumed" / "stages").iterdir()) == ["1", "2-1", "2-2", "3"]
    assert len(list((tmp_path / "resumed").glob("checkpoint-*"))) == 1


def test_resuming_with_another_config_is_refused(tiny_hdfs: tuple[Path, Path], tmp_path: Path) -> None:
    config = _config(tiny_hdfs, tmp_path / "run", RESUME_STAGES[:1], checkpoint_every=1)
    with pytest.raises(Crash):
        train(config, progress=False, on_step=_crash_at(1))
    other = config.model_copy(update={"seed": 7})
    with pytest.raises(UserError, match="checkpoint of another config"):
        train(other, progress=False)
    recorded = TrainConfig.model_validate_json((tmp_path / "run" / "config.json").read_text())
    assert recorded.digest() == config.digest()  # the refused run did not relabel the folder
    stale = tmp_path / "run" / "eval" / "report.json"  # as if the first config's run had been evaluated
    stale.parent.mkdir()
    stale.write_text("{}")
    train(other, progress=False, fresh=True)  # --fresh discards it, evaluation included
    assert not stale.exists()


def test_a_real_tiny_run_lowers_the_loss_and_evaluates(tiny_hdfs: tuple[Path, Path], tmp_path: Path) -> None:
    """Stage 1 at the paper's LR (no decay inside this short run) on real HDFS blocks: the answer
    loss on a fixed training batch falls well below its start; then the report is written."""
    stage = StageConfig(name="1", trains=["decoder_lora"], lr=5e-4, samples=24)
    config = _config(tiny_hdfs, tmp_path / "run", [stage], evaluate=True, baseline=True)
    config = config.model_copy(update={"optim": OptimConfig(micro_batch=2, accumulation=1, decays_per_stage=1)})

    def fixed_batch_loss(detector: LogLLMDetector) -> float:
        from training.train import prepare

        split = prepare(config)
        batch = split.train[:6]
        detector.model.eval()
        with torch.no_grad():
            rows = [detector.model.project(detector.embed(normalize_sequence(s.messages))) for s in batch]
            return detector.model.answer_loss(rows, [s.label for s in batch]).item()

    before = fixed_batch_loss(LogLLMDetector.create(SMALL_ARCH, FP32, seed=config.seed))
    run = train(config, progress=False)
    after = fixed_batch_loss(load_detector(run.detector_dir, FP32))  # type: ignore[arg-type]
    assert after < 0.6 * before, (before, after)
    losses = [loss for _, _, loss in _losses(tmp_path / "run")]
    assert len(losses) == 12 and sum(losses[-3:]) < sum(losses[:3])
    assert run.report is not None
    assert set(run.report["results"]) == {"logllm", "baseline"}
    for name in ("report.md", "pr_curve.png", "training_loss.png", "scores_logllm.jsonl"):
        assert (tmp_path / "run" / "eval" / name).exists()


def test_configs_that_do_not_fit_the_model(tiny_hdfs: tuple[Path, Path], tmp_path: Path) -> None:
    stage = [StageConfig(name="1", trains=["decoder_lora"], lr=5e-4, samples=2)]
    too_long = LogLLMArchitecture(encoder=SMALL_ARCH.encoder, decoder=SMALL_ARCH.decoder, max_message_tokens=4096)
    with pytest.raises(UserError, match="exceeds the encoder's 512 positions"):
        train(_config(tiny_hdfs, tmp_path / "a", stage, architecture=too_long), progress=False)
    bad_targets = SMALL_ARCH.model_copy(
        update={"decoder_lora": SMALL_ARCH.decoder_lora.model_copy(update={"target_modules": ("no_such_proj",)})}
    )
    with pytest.raises(UserError, match="does not fit the base models"):
        train(_config(tiny_hdfs, tmp_path / "b", stage, architecture=bad_targets), progress=False)


def test_calibrate_records_a_threshold_that_becomes_the_folder_label_rule(tiny_hdfs: tuple[Path, Path], tmp_path: Path) -> None:
    """`calibrate` scores the training split, records the best-F1 cut in the manifest (a new
    version), and the folder then labels by it; `evaluate_run` shows the greedy answer beside it."""
    from model.folder import rewrite_manifest
    from model.logllm import parse_answer
    from training.calibrate import calibrate, choose_threshold
    from training.train import evaluate_run, prepare

    config = _config(tiny_hdfs, tmp_path / "run", [StageConfig(name="1", trains=["decoder_lora"], lr=5e-4, samples=8)])
    folder = train(config, progress=False).detector_dir
    split = prepare(config)
    before = load_detector(folder, FP32)
    assert before.threshold is None  # type: ignore[attr-defined]
    train_scores = [v.score for v in before.score([s.messages for s in split.train])]

    recorded = calibrate(folder, config.data, FP32, progress=False)
    expected = choose_threshold([s.label for s in split.train], train_scores).threshold
    assert recorded["threshold"] == pytest.approx(expected)
    assert recorded["previous_version"] == before.version != recorded["version"]
    after = load_detector(folder, FP32)
    assert after.version == recorded["version"] and after.threshold == pytest.approx(expected)  # type: ignore[attr-defined]
    verdicts = after.score([s.messages for s in split.test])
    assert [v.label for v in verdicts] == [int(v.score >= expected) for v in verdicts]

    report = evaluate_run(folder, split, config, tmp_path / "eval", title="tiny", context={}, progress=False)
    assert report["label_rule"].startswith("p(anomalous) >= ")
    answers = [parse_answer(v.answer)[0] for v in verdicts]
    assert report["results"]["logllm-answer"]["tp"] == sum(a and s.label for a, s in zip(answers, split.test, strict=True))

    # The recorded rule is what labels: cuts at 0 and just above every score flag all and none.
    for cut, label in ((0.0, 1), (min(1.0, max(v.score for v in verdicts) + 1e-6), 0)):
        rewrite_manifest(folder, {"decision": {"rule": "score_threshold", "threshold": cut}})
        assert {v.label for v in load_detector(folder, FP32).score([s.messages for s in split.test])} == {label}


def test_a_config_with_calibrate_ends_with_a_calibrated_folder_and_both_rules_reported(
    tiny_hdfs: tuple[Path, Path], tmp_path: Path
) -> None:
    from model.folder import read_manifest

    stage = StageConfig(name="1", trains=["decoder_lora"], lr=5e-4, samples=8)
    plain = _config(tiny_hdfs, tmp_path / "run", [stage], evaluate=True)
    config = plain.model_copy(update={"calibrate": True})
    assert config.digest() == plain.digest()  # calibration does not change what trains
    run = train(config, progress=False)
    decision = read_manifest(run.detector_dir)["decision"]
    assert decision["rule"] == "score_threshold" and decision["chosen_on"]["scored"] == "the training split"
    assert run.report is not None and set(run.report["results"]) == {"logllm", "logllm-answer"}
    assert run.report["detector"] == load_detector(run.detector_dir, FP32).version
