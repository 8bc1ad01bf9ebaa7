"""`logllm train` / `eval` / `calibrate` refuse bad input with a clear message (exit 2, no traceback),
before any model is loaded."""

from __future__ import annotations

from pathlib import Path

import pytest

from enricher.cli import main


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


def _config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(f'output = "{tmp_path / "run"}"\n{body}')
    return path


def test_train_missing_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run(["train", "--config", str(tmp_path / "none.toml")], capsys)
    assert code == 2 and "config file" in err and "does not exist" in err


def test_train_empty_config_is_refused_before_any_training(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    code, err = _run(["train", "--config", str(empty)], capsys)
    assert code == 2 and f"config file {empty} is empty" in err


def test_train_invalid_config_names_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run(["train", "--config", str(_config(tmp_path, "[optim]\nmicro_batch = -1\n"))], capsys)
    assert code == 2 and "optim.micro_batch" in err


def test_train_wrong_data_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path, f'[data]\nkind = "raw"\npath = "{tmp_path / "missing.log"}"\nwindow = 10\n'
                               f'line_labels = "{tmp_path / "labels.txt"}"\n')
    (tmp_path / "labels.txt").write_text("0\n")
    code, err = _run(["train", "--config", str(config)], capsys)
    assert code == 2 and "missing.log does not exist" in err


def test_train_empty_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty.log").write_text("")
    (tmp_path / "labels.csv").write_text("key,label\nreq-1,1\n")
    config = _config(tmp_path, f'[data]\nkind = "raw"\npath = "{tmp_path / "empty.log"}"\nsession_regex = "req-\\\\d+"\n'
                               f'labels = "{tmp_path / "labels.csv"}"\n')
    code, err = _run(["train", "--config", str(config)], capsys)
    assert code == 2 and "no lines" in err


def test_train_single_class(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "app.log").write_text("".join(f"step {i} of req-{i}\n" for i in range(20)))
    (tmp_path / "labels.csv").write_text("key,label\n" + "".join(f"req-{i},normal\n" for i in range(20)))
    config = _config(tmp_path, f'[data]\nkind = "raw"\npath = "{tmp_path / "app.log"}"\nsession_regex = "req-\\\\d+"\n'
                               f'labels = "{tmp_path / "labels.csv"}"\n')
    code, err = _run(["train", "--config", str(config)], capsys)
    assert code == 2 and "all 16 training sequences are normal" in err
    assert "Traceback" not in err


def test_eval_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run(["eval", "--model", str(tmp_path / "none"), "--dataset", "hdfs"], capsys)
    assert code == 2 and "does not exist" in err
    (tmp_path / "m").mkdir()
    code, err = _run(["eval", "--model", str(tmp_path / "m"), "--dataset", "hdfs"], capsys)
    assert code == 2 and "no manifest.json" in err


def test_calibrate_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    from model.folder import write_detector_folder

    code, err = _run(["calibrate", "--model", str(tmp_path / "none"), "--dataset", "hdfs"], capsys)
    assert code == 2 and "does not exist" in err
    write_detector_folder(tmp_path / "k", {"detector": "logllama"}, {"w.safetensors": {"t": torch.zeros(1)}})
    code, err = _run(["calibrate", "--model", str(tmp_path / "k"), "--dataset", "hdfs"], capsys)
    assert code == 2 and "LogLLM only" in err and "Traceback" not in err


def test_eval_unknown_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from model.errors import UserError
    from training.cli import data_config_from

    with pytest.raises(UserError, match="not hdfs or bgl and no such file"):
        data_config_from(str(tmp_path / "nothing.toml"))
    spec = tmp_path / "d.toml"
    spec.write_text('[data]\nkind = "bgl_windows"\n')
    assert data_config_from(str(spec)).kind == "bgl_windows"


def test_eval_and_calibrate_refuse_logs_without_labels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    from model.folder import write_detector_folder

    write_detector_folder(tmp_path / "k", {"detector": "logllama"}, {"w.safetensors": {"t": torch.zeros(1)}})
    (tmp_path / "app.log").write_text("step of req-1\n")
    spec = _config(tmp_path, f'detector = "logllama"\n[data]\nkind = "raw"\npath = "{tmp_path / "app.log"}"\n'
                             'window = 10\nassume_normal = true\n')
    for command in ("eval", "calibrate"):
        code, err = _run([command, "--model", str(tmp_path / "k"), "--dataset", str(spec)], capsys)
        assert code == 2 and "data.assume_normal marks logs without anomaly labels" in err, err
        assert "`logllm score`" in err and "Traceback" not in err
