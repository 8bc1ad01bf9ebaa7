"""`logllm train`, `logllm eval` and `logllm calibrate`: train LogLLM from a config; evaluate a detector
folder; choose its label threshold on the training split."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from model.errors import UserError

BUILTIN_DATASETS = {"hdfs": {"kind": "hdfs"}, "bgl": {"kind": "bgl_windows"}}


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    train = subparsers.add_parser(
        "train",
        help="train a LogLLM detector (three stages), or LogLLaMA (detector = \"logllama\"), from a TOML/JSON config",
        description=(
            "Train LogLLM as the config says (data, split, stages, sampler; paper defaults), resuming from the "
            "run folder's last checkpoint, then evaluate LogLLM and the drain3 baseline on the test split. "
            "Examples: training/configs/*.toml."
        ),
    )
    train.add_argument("--config", required=True, type=Path, help="TOML or JSON config (see training/config.py)")
    train.add_argument("--output", type=Path, help="run folder (overrides the config's `output`)")
    train.add_argument("--fresh", action="store_true", help="discard the run folder's checkpoints and start over")
    train.add_argument("--no-eval", action="store_true", help="skip the evaluation after training")
    train.add_argument("--threads", type=int, help="torch CPU threads (overrides runtime.threads)")
    train.set_defaults(handler=run_train)

    ev = subparsers.add_parser(
        "eval",
        help="evaluate a detector folder on a labelled dataset (P/R/F1, threshold sweep, PNGs)",
        description=(
            "Score the test split of a labelled dataset with the detector in --model and write report.md/json, "
            "per-sequence scores and a precision-recall PNG; the drain3 + event-count baseline is trained on the "
            "same split's training side and reported beside it."
        ),
    )
    ev.add_argument("--model", required=True, type=Path, help="detector folder (manifest.json + weights)")
    ev.add_argument(
        "--dataset",
        required=True,
        help="'hdfs' (HDFS_2pct, seed-42 block split), 'bgl' (BGL_windows100, upstream split), or a TOML/JSON "
        "file with a [data] table (a training config works)",
    )
    ev.add_argument("--split", choices=("test", "all"), default="test", help="score the test split or every sequence")
    ev.add_argument("--output", "-o", type=Path, help="report folder (default: eval-<model>-<dataset>)")
    ev.add_argument("--no-baseline", action="store_true", help="do not train/evaluate the baseline")
    ev.add_argument("--classifier", choices=("decision_tree", "logistic_regression"), default="decision_tree",
                    help="the baseline's classifier")
    _add_runtime_arguments(ev)
    ev.set_defaults(handler=run_eval)

    cal = subparsers.add_parser(
        "calibrate",
        help="choose a LogLLM folder's label threshold on the training split (best F1) and record it in the folder",
        description=(
            "Score the training split of --dataset (the data the detector was trained on; never its test split) "
            "with the LogLLM folder --model, pick the cut p(anomalous) >= t with the best F1 there, and write it "
            "into the folder's manifest: from then on the folder labels by that cut instead of the greedy answer, "
            "under a new version. Run `logllm eval` afterwards to see both rules on the test split. [ours; the "
            "paper labels by the greedy answer]"
        ),
    )
    cal.add_argument("--model", required=True, type=Path, help="LogLLM detector folder (rewritten in place)")
    cal.add_argument("--dataset", required=True, help="as for `logllm eval`: hdfs, bgl, or a TOML/JSON file with [data]")
    _add_runtime_arguments(cal)
    cal.set_defaults(handler=run_calibrate)


def run_train(args: argparse.Namespace) -> int:
    from training.config import load_config
    from training.logllama import config_selects_logllama, load_logllama_config, run_train_command
    from training.train import train

    overrides: dict[str, Any] = {}
    if args.output is not None:
        overrides["output"] = str(args.output)
    if args.no_eval:
        overrides["evaluate"] = False
    logllama = config_selects_logllama(args.config)
    config = (load_logllama_config if logllama else load_config)(args.config, overrides)
    if args.threads is not None:
        config.runtime = config.runtime.model_copy(update={"threads": args.threads})
    if logllama:
        return run_train_command(config)
    run = train(config, fresh=args.fresh)
    print(f"logllm train: detector written to {run.detector_dir}", file=sys.stderr)
    if run.report is not None:
        for name, result in run.report["results"].items():
            print(
                f"logllm train: {name}: P {result['precision']:.4f} R {result['recall']:.4f} F1 {result['f1']:.4f}",
                file=sys.stderr,
            )
    return 0


def data_config_from(spec: str) -> Any:
    """`--dataset`: a builtin name or a TOML/JSON file holding a [data] table (or only data keys)."""
    from training.config import DataConfig, TrainConfig, parse_config, read_config_file

    if spec in BUILTIN_DATASETS:
        return DataConfig.model_validate(BUILTIN_DATASETS[spec])
    path = Path(spec)
    if not path.is_file():
        raise UserError(f"--dataset {spec!r}: not {' or '.join(BUILTIN_DATASETS)} and no such file")
    raw = read_config_file(path, "training/configs/")
    data = raw.get("data", raw)
    if isinstance(data, dict) and data.get("assume_normal"):
        raise UserError(
            f"--dataset {spec}: data.assume_normal marks logs without anomaly labels, and this command measures "
            "against labels; label those logs with `logllm score` (a LogLLaMA training run's report.json says how "
            "many of its held-out sequences it flags), or give a labelled dataset"
        )
    config: TrainConfig = parse_config({"data": data}, str(path))
    return config.data


def _add_runtime_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch-size", type=int, default=16, help="sequences per decoder batch")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--dtype", choices=("auto", "float32", "bfloat16"), default="auto")
    parser.add_argument("--threads", type=int, help="torch CPU threads")


def _runtime(args: argparse.Namespace) -> Any:
    from model.detector import RuntimeSettings

    return RuntimeSettings(device=args.device, dtype=args.dtype, batch_size=args.batch_size, threads=args.threads)


def run_calibrate(args: argparse.Namespace) -> int:
    from training.calibrate import calibrate

    recorded = calibrate(args.model, data_config_from(args.dataset), _runtime(args))
    chosen, before = recorded["train"], recorded["train_before"]
    print(
        f"logllm calibrate: {args.model}: label when p(anomalous) >= {recorded['threshold']:.6g}; on the "
        f"{recorded['chosen_on']['train']} training sequences F1 {chosen['f1']:.4f} (TP {chosen['tp']} FP {chosen['fp']}) "
        f"against {before['f1']:.4f} (TP {before['tp']} FP {before['fp']}) by the rule before; "
        f"version {recorded['previous_version']} -> {recorded['version']}",
        file=sys.stderr,
    )
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from model.folder import read_manifest
    from training.config import TrainConfig
    from training.data import Split, build_split, load_dataset
    from training.train import evaluate_run

    read_manifest(args.model)  # a wrong --model fails before the data is loaded
    data = data_config_from(args.dataset)
    dataset = load_dataset(data)
    if args.split == "all":
        split = Split((), dataset.sequences, "all sequences (no split)")
        baseline = False
    else:
        split = build_split(data, dataset, require_both_classes=not args.no_baseline)
        baseline = not args.no_baseline
    config = TrainConfig(data=data, runtime=_runtime(args), baseline=baseline, baseline_classifier=args.classifier)
    name = args.dataset if args.dataset in BUILTIN_DATASETS else Path(args.dataset).stem
    out_dir = args.output or Path(f"eval-{args.model.resolve().name}-{name}")
    report = evaluate_run(
        args.model,
        split,
        config,
        out_dir,
        title=f"{args.model.name} on {data.describe()}",
        context={"split": split.summary(), "model_dir": str(args.model)},
    )
    for detector, result in report["results"].items():
        print(
            f"logllm eval: {detector}: P {result['precision']:.4f} R {result['recall']:.4f} F1 {result['f1']:.4f} "
            f"(TP {result['tp']} FP {result['fp']} FN {result['fn']} TN {result['tn']})",
            file=sys.stderr,
        )
    if "k_sweep" in report:
        best = max(report["k_sweep"], key=lambda row: (row["f1"], -row["k"]))
        print(
            f"logllm eval: Top-K rule on these labels: best F1 {best['f1']:.4f} at K = {best['k']} (the folder's K = "
            f"{report['k']}); every K in {out_dir / 'report.md'}; another K applies with --top-k / scoring.top_k",
            file=sys.stderr,
        )
    return 0
