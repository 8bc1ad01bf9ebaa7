"""The typed training config: paper defaults, TOML/JSON loading, actionable errors; the
shipped configs parse."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from model.errors import UserError
from training.config import PAPER_STAGES, TrainConfig, load_config, parse_config

CONFIG_DIR = Path(__file__).resolve().parents[2] / "training" / "configs"


def test_defaults_are_the_paper_recipe() -> None:
    config = TrainConfig()
    assert config.stages == list(PAPER_STAGES)
    assert (config.optim.micro_batch, config.optim.accumulation) == (4, 4)
    assert (config.optim.gamma, config.optim.decays_per_stage) == (0.7, 10)
    assert config.sampler.beta == 0.3
    assert config.sampler.min_samples_per_epoch is None and config.sampler.max_samples_per_epoch is None
    assert config.sampler.cap_order == "random"  # the paper's stage 1 keeps a uniform 1,000 of the pool
    assert config.data.kind == "hdfs" and config.data.split == "random" and config.data.seed == 42
    assert config.architecture.decoder_lora.r == 8 and config.architecture.encoder_lora.alpha == 32


def test_every_field_has_a_description() -> None:
    from pydantic import BaseModel

    def walk(model: type[BaseModel]) -> None:
        for name, info in model.model_fields.items():
            assert info.description, f"{model.__name__}.{name} has no description"
            annotation = info.annotation
            for candidate in getattr(annotation, "__args__", (annotation,)):
                if isinstance(candidate, type) and issubclass(candidate, BaseModel) and candidate.__module__ == "training.config":
                    walk(candidate)

    walk(TrainConfig)


def test_toml_and_json_load_the_same(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text('seed = 3\n[data]\nkind = "bgl_windows"\n[sampler]\nmax_samples_per_epoch = 50\n'
                    '[[stages]]\nname = "only"\ntrains = ["projector"]\nlr = 1e-3\n')
    js = tmp_path / "c.json"
    js.write_text(json.dumps({"seed": 3, "data": {"kind": "bgl_windows"}, "sampler": {"max_samples_per_epoch": 50},
                              "stages": [{"name": "only", "trains": ["projector"], "lr": 1e-3}]}))
    a, b = load_config(toml), load_config(js)
    assert a == b
    assert a.data.split == "upstream" and a.data.fraction_mode == "prefix"
    assert a.digest() == b.digest() != TrainConfig().digest()
    assert load_config(toml, {"output": "elsewhere"}).digest() == a.digest()  # output does not change training


def test_digest_is_that_of_runs_made_before_assume_normal_existed() -> None:
    """A run folder or benchmark record made before `data.assume_normal` was added hashed the
    dump without it; the digest must still match it, or interrupted runs stop resuming and
    benchmarks stop reusing their figures."""
    import hashlib

    config = load_config(CONFIG_DIR / "logllm_bgl_small_cpu.toml")
    before = config.model_dump(mode="json", exclude={"output", "calibrate", "evaluate", "baseline", "baseline_classifier"})
    del before["data"]["assume_normal"]
    assert config.digest() == hashlib.sha256(json.dumps(before, sort_keys=True).encode()).hexdigest()[:16]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"sede": 1}, "sede: Extra inputs are not permitted"),
        ({"optim": {"micro_batch": 0}}, "optim.micro_batch"),
        ({"stages": [{"name": "x", "trains": ["decoder"], "lr": 1e-3}]}, "stages.0.trains.0"),
        ({"stages": [{"name": "x", "trains": [], "lr": 1e-3}]}, "stages.0.trains"),
        ({"stages": [{"name": "x", "trains": ["projector"], "lr": 1}, {"name": "x", "trains": ["projector"], "lr": 1}]},
         "stage names must be unique"),
        ({"data": {"kind": "raw"}}, "needs data.path"),
        ({"data": {"kind": "raw", "path": "x.log"}}, "exactly one of data.session_regex or data.window"),
        ({"data": {"kind": "raw", "path": "x.log", "window": 10, "split": "random"}}, "use 'chronological'"),
        ({"data": {"kind": "opensearch"}}, "needs a \\[data.opensearch\\] table"),
        ({"sampler": {"beta": 1.0}}, "sampler.beta"),
        ({"sampler": {"cap_order": "distinct"}}, "sampler.cap_order"),
        ({"data": {"kind": "hdfs", "assume_normal": True}}, "kind 'hdfs' carries its labels, so drop assume_normal"),
        ({"data": {"kind": "raw", "path": "x.log", "window": 10, "assume_normal": True, "line_labels": "y.txt"}},
         "drop data.labels / data.line_labels, or drop assume_normal"),
        ({"data": {"kind": "raw", "path": "x.log", "window": 10, "assume_normal": True}},
         'trains LogLLaMA only \\(top-level detector = "logllama"\\)'),
    ],
)
def test_invalid_configs_name_the_key(raw: dict[str, object], message: str) -> None:
    with pytest.raises(UserError, match=message):
        parse_config(raw)


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        load_config(tmp_path / "none.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("seed = \n")
    with pytest.raises(UserError, match="not valid TOML"):
        load_config(bad)


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [("empty.toml", "# all commented out\n", "is empty"), ("empty.json", "{}", "is empty"),
     ("list.json", "[1]", "must hold a JSON table")],
)
def test_empty_or_non_table_config_is_refused(tmp_path: Path, name: str, text: str, message: str) -> None:
    # Every field has a default, so an empty file would otherwise start the paper's full recipe.
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(UserError, match=message):
        load_config(path)


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("logllm_*.toml")), ids=lambda p: p.name)
def test_shipped_configs_parse(path: Path) -> None:
    config = load_config(path)
    assert [s.name for s in config.stages] == ["1", "2-1", "2-2", "3"]
    # The CPU recipes keep the paper's stage structure, LRs and epochs; they only cap samples.
    assert [(s.trains, s.epochs, s.lr) for s in config.stages] == [(p.trains, p.epochs, p.lr) for p in PAPER_STAGES]
