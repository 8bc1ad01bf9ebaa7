"""LogLLaMA on HDFS and BGL: P/R/F1 with and without the RL stage, beside LogLLM-small and the
classic baseline on the same split; and a small measured comparison of the two key
representations (added key tokens vs template text).

    python benchmarks/bench_logllama.py --dataset hdfs
    python benchmarks/bench_logllama.py --dataset bgl --seeds 42 43 44
    python benchmarks/bench_logllama.py --compare-keys

`--dataset` trains with ``training/configs/logllama_<dataset>.toml`` (one run per seed, under
``--run-dir``), evaluates on the test split and writes ``results/logllama_<dataset>.json``.
LogLLM-small and baseline figures are read from ``results/train_<dataset>.json`` when that
file exists (written by the LogLLM training benchmark on the same split); otherwise the
baseline is trained here on the same split and LogLLM is reported as missing.

`--compare-keys` trains both representations for the same steps on the same small HDFS subset
and writes ``results/logllama_keys.json``: next-key Top-K hit rate on held-out normal blocks,
flags on held-out normal and anomalous blocks, and training/scoring cost (wall and CPU time).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import DETECTION_KEYS, RESULTS_DIR, mean_and_std, peak_rss_mb, write_result  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# LogLLM-small figures when no results/train_<dataset>.json exists: the shipped model's own report.
SHIPPED_REPORTS = {"hdfs": REPO / "model" / "shipped" / "logllm-small-hdfs" / "report.json"}


# ============================================================================ dataset runs
def _metrics(report: dict[str, Any]) -> dict[str, Any]:
    keep = (*DETECTION_KEYS, "sequences", "seconds", "sequences_per_s",
            "anomalous_with_unseen_key", "normal_with_unseen_key", "version")
    return {k: report[k] for k in keep if k in report}


def _aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One run: its metrics. Several seeds: mean and std of P/R/F1, and every seed's metrics."""
    if len(runs) == 1:
        return runs[0]
    return {**mean_and_std(runs), "per_seed": runs}


def _aggregate_k_sweep(sweeps: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per K: the mean validation false-positive rate and test F1 over the seeds, each seed's F1."""
    rows = []
    for at_k in zip(*sweeps, strict=True):
        f1s = [r["f1"] for r in at_k]
        rows.append({
            "k": at_k[0]["k"],
            "validation_false_positive_rate": round(statistics.mean(r["validation_false_positive_rate"] for r in at_k), 6),
            "f1": round(statistics.mean(f1s), 6),
            "f1_per_seed": f1s,
            "fp_per_seed": [r["fp"] for r in at_k],
            "fn_per_seed": [r["fn"] for r in at_k],
        })
    return rows


def _k_sweep_table(rows: list[dict[str, Any]], chosen_k: int) -> str:
    """Markdown rows up to 2 x the chosen K (at most ~15 of them, the chosen K always in)."""
    step = max(1, math.ceil(2 * chosen_k / 14))
    shown = [r for r in rows if r["k"] <= 2 * chosen_k and ((r["k"] - 1) % step == 0 or r["k"] == chosen_k)]
    return "\n".join(
        f"| {'**' + str(r['k']) + '**' if r['k'] == chosen_k else r['k']} | {100 * r['validation_false_positive_rate']:.2f}% | "
        + " / ".join(f"{f:.3f} ({fp}/{fn})" for f, fp, fn in zip(r["f1_per_seed"], r["fp_per_seed"], r["fn_per_seed"], strict=True))
        + f" | {r['f1']:.3f} |"
        for r in shown
    )


def _reference(dataset: str, split: Any) -> dict[str, Any]:
    """LogLLM-small and baseline on the same split: from train_<dataset>.json, else the baseline here."""
    path = RESULTS_DIR / f"train_{dataset}.json"
    if path.exists():
        data = json.loads(path.read_text())
        return {
            "source": f"benchmarks/results/{path.name} ({data.get('date', '?')})",
            "split": data.get("split"),
            "logllm": {k: data["logllm"].get(k) for k in DETECTION_KEYS} if "logllm" in data else None,
            "baseline": {k: data["baseline"].get(k) for k in DETECTION_KEYS} if "baseline" in data else None,
        }
    from training.baseline import TemplateCountBaseline
    from training.evaluate import binary_metrics

    baseline = TemplateCountBaseline().fit([s.messages for s in split.train], [s.label for s in split.train])
    predictions, _ = baseline.predict([s.messages for s in split.test])
    metrics = binary_metrics([s.label for s in split.test], predictions).as_dict()
    logllm, logllm_source = None, f"LogLLM-small: benchmarks/results/{path.name} not present"
    shipped = SHIPPED_REPORTS.get(dataset)
    if shipped is not None and shipped.exists():
        report = json.loads(shipped.read_text())
        # Only figures from the very same split are comparable.
        if report.get("split", {}).get("how") == split.how and report["split"].get("test") == len(split.test):
            logllm = {k: report["results"]["logllm"].get(k) for k in DETECTION_KEYS}
            logllm_source = f"LogLLM-small: the shipped model's report {shipped.relative_to(REPO)} (same split)"
    return {
        "source": f"baseline trained by this script on the same split; {logllm_source}",
        "split": split.how,
        "logllm": logllm,
        "baseline": metrics,
    }


def _same_run(config: Any) -> bool:
    """Whether `config.output` holds a finished run (report.json) trained with this very config.

    The recorded config is read through the current config class first, so a field added since
    (whose default is the behaviour from before it, e.g. `min_key_share = 0`) does not make an
    old run look like another recipe; one that no longer validates is another recipe."""
    from pydantic import ValidationError

    record = config.output / "training.json"
    if not (config.output / "report.json").exists() or not record.exists():
        return False
    try:
        recorded = type(config).model_validate(json.loads(record.read_text())["config"])
    except ValidationError:
        return False
    return _recipe(recorded.model_dump(mode="json")) == _recipe(config.model_dump(mode="json"))


def _recipe(config: dict[str, Any]) -> dict[str, Any]:
    """A run config without what does not change the trained model: where it is written, and
    the torch thread count (so `--threads` can differ when re-scoring with `--reuse`)."""
    recipe = {k: v for k, v in config.items() if k != "output"}
    recipe["runtime"] = {k: v for k, v in recipe["runtime"].items() if k != "threads"}
    return recipe


def run_dataset(args: argparse.Namespace) -> None:
    from training.data import build_split, load_dataset
    from training.logllama import evaluate_logllama_run, load_logllama_config, prepare_data, train_logllama

    config_path = args.config or REPO / "training" / "configs" / f"logllama_{args.dataset}.toml"
    base = load_logllama_config(config_path)
    if args.threads:
        base.runtime = base.runtime.model_copy(update={"threads": args.threads})
    dataset = load_dataset(base.data)
    runs, reports, trainings = [], [], []
    started = time.perf_counter()
    cpu_started = time.process_time()
    reused = []
    for seed in args.seeds or [base.seed]:
        config = base.model_copy(update={"seed": seed, "output": args.run_dir / f"{args.dataset}-seed{seed}"})
        if args.reuse and _same_run(config):
            print(f"bench_logllama: re-scoring the finished run {config.output} (same config)", file=sys.stderr)
            folders = json.loads((config.output / "training.json").read_text())["folders"]
            evaluate_logllama_run(config, prepare_data(config, dataset), {name: Path(f) for name, f in folders.items()})
            folder = config.output / "detector"
            reused.append(str(config.output))
        else:
            print(f"bench_logllama: training {args.dataset} seed {seed} -> {config.output}", file=sys.stderr)
            folder = train_logllama(config, dataset)
        report = json.loads((config.output / "report.json").read_text())
        training = json.loads((config.output / "training.json").read_text())
        reports.append(report)
        trainings.append(training)
        runs.append({"seed": seed, "folder": str(folder), "report": report})
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    first = reports[0]
    with_rl = _aggregate([_metrics(r["with_rl"]) for r in reports])
    without_rl = _aggregate([_metrics(r["without_rl"]) for r in reports])
    controls = [_metrics(r["lm_continued"]) for r in reports if "lm_continued" in r]
    lm_continued = _aggregate(controls) if len(controls) == len(reports) else None
    split = build_split(base.data, dataset, require_both_classes=False)
    reference = _reference(args.dataset, split)
    stages = {
        name: {
            "wall_s": round(stage["wall_s"], 1),
            "steps": stage["steps"],
            "sequences": stage["sequences"],
            "stopped": stage["stopped"],
            "best": stage["best"],
        }
        for name, stage in trainings[0]["stages"].items()
    }
    notes = [
        "LogLLaMA trains on the normal training sequences only (10% of them held out for validation).",
        "Keys are fixed from the normal training data; an unseen template maps to <unk>, always outside the Top-K.",
    ]
    rare = trainings[0]["data"].get("rare_templates_as_unk")
    if rare:
        notes.append(
            f"min_key_share = {base.min_key_share} (ours, not METHOD.md): templates in fewer than that share of the "
            "normal training sequences are no keys, so their lines are <unk>: "
            + "; ".join(f"'{r['template']}' ({r['sequences']} sequences)" for r in rare) + "."
        )
    if args.dataset == "hdfs":
        notes.append("E30 ('BLOCK* ask ... to delete') is absent from HDFS_2pct, so it would be <unk> on other HDFS files.")
    else:
        notes.append(
            "BGL: the windows file's EventIds are the keys; windows of 100 collapsed entries with the upstream "
            "split; no timestamps, so no 60 s windows: not comparable to the paper's BGL."
        )
    # Unseen keys are outside the Top-K by rule: normal test sequences holding one are false
    # positives whatever the model, which caps precision (recall 1 assumed for the F1 cap).
    tp_all = first["with_rl"]["tp"] + first["with_rl"]["fn"]
    forced_fp = first["with_rl"]["normal_with_unseen_key"]
    cap_p = tp_all / (tp_all + forced_fp) if tp_all + forced_fp else 1.0
    ceiling = {
        "normal_test_sequences_with_unseen_key": forced_fp,
        "anomalous_test_sequences_with_unseen_key": first["with_rl"]["anomalous_with_unseen_key"],
        "max_precision": round(cap_p, 6),
        "max_f1": round(2 * cap_p / (cap_p + 1), 6),
    }
    payload = {
        "dataset": f"{dataset.name} ({trainings[0]['data']['split']['how']})",
        "model": {
            "decoder": base.architecture.decoder,
            "detector_version": first["with_rl"]["version"],
            "without_rl_version": first["without_rl"]["version"],
            "n_keys": first["n_keys"],
            "sequence_kind": trainings[0]["config"]["architecture"]["sequence_kind"],
        },
        "k": first["k"],
        "k_requested": base.k,
        "with_rl": with_rl,
        "without_rl": without_rl,
        "rl_gain_f1": round(with_rl["f1"] - without_rl["f1"], 6),
        "lm_continued": lm_continued,
        "rl_gain_f1_over_lm_continued": round(with_rl["f1"] - lm_continued["f1"], 6) if lm_continued else None,
        "k_sweep_with_rl": _aggregate_k_sweep([r["with_rl"]["k_sweep"] for r in reports]),
        "k_sweep_validation": first["validation"],
        "seeds": [r["seed"] for r in runs],
        "split": trainings[0]["data"]["split"],
        "data": trainings[0]["data"],
        "rl": trainings[0]["config"]["rl"],
        "stages": stages,
        "side_by_side": reference,
        "unseen_key_ceiling": ceiling,
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "reused_runs": reused,
        "training_wall_s": [round(t["wall_s"], 1) for t in trainings],
        "config": str(Path(config_path).resolve().relative_to(REPO)) if Path(config_path).resolve().is_relative_to(REPO) else str(config_path),
        "notes": notes,
    }
    write_result(f"logllama_{args.dataset}", payload, _markdown(payload))
    print(json.dumps({k: payload[k] for k in ("k", "with_rl", "without_rl", "rl_gain_f1")}, indent=2))


def _fmt(m: dict[str, Any] | None, key: str) -> str:
    if not m or m.get(key) is None:
        return "n/a"
    std = m.get(f"{key}_std")
    return f"{m[key]:.3f}" + (f" ± {std:.3f}" if std is not None else "")


def _markdown(p: dict[str, Any]) -> str:
    ref = p["side_by_side"]
    rows = [
        ("LogLLaMA + RL", p["with_rl"]),
        ("LogLLaMA, no RL", p["without_rl"]),
        *([("LogLLaMA, control: equal extra likelihood training instead of RL", p["lm_continued"])] if p["lm_continued"] else []),
        ("LogLLM-small", ref.get("logllm")),
        ("baseline (drain3 + counts + tree)", ref.get("baseline")),
    ]
    table = "\n".join(
        f"| {name} | {_fmt(m, 'precision')} | {_fmt(m, 'recall')} | {_fmt(m, 'f1')} | {_fmt(m, 'average_precision')} |"
        for name, m in rows
    )
    stages = "; ".join(f"{n}: {s['wall_s']} s, {s['steps']} steps, stopped: {s['stopped']}" for n, s in p["stages"].items())
    return (
        f"Dataset: {p['dataset']}; seeds {p['seeds']}. Decoder `{p['model']['decoder']}` + LoRA, "
        f"{p['model']['n_keys']} keys, K = {p['k']} (requested {p['k_requested']}), CPU fp32. "
        f"Detector `{p['model']['detector_version']}` (no RL: `{p['model']['without_rl_version']}`).\n\n"
        "| detector | precision | recall | F1 | AP of the score |\n|---|---|---|---|---|\n"
        f"{table}\n\nLabels are the Top-K rule; AP is the average precision of each detector's continuous "
        "score on the test split (LogLLaMA: the surprisal of a sequence's least likely key, "
        "ties broken by the share of keys outside the Top-K). "
        f"RL gain in F1: {p['rl_gain_f1']:+.3f} over no RL"
        + (f", {p['rl_gain_f1_over_lm_continued']:+.3f} over the control" if p["lm_continued"] else "")
        + f". Stages (first seed): {stages}. "
        f"Training wall time per run: {p['training_wall_s']} s"
        + (f" (trained earlier, re-scored now: {', '.join(p['reused_runs'])})" if p["reused_runs"] else "")
        + f". Reference figures: {ref['source']}.\n\n"
        f"Unseen keys: {p['unseen_key_ceiling']['normal_test_sequences_with_unseen_key']} normal and "
        f"{p['unseen_key_ceiling']['anomalous_test_sequences_with_unseen_key']} anomalous test sequences hold a key "
        "never seen in normal training (or too rare to be one); the rule flags them whatever the model, so precision is at most "
        f"{p['unseen_key_ceiling']['max_precision']:.3f} (F1 at most {p['unseen_key_ceiling']['max_f1']:.3f}).\n\n"
        + "\n".join(f"- {n}" for n in p["notes"])
        + "\n\nThe rule at other K (LogLLaMA + RL, one scoring pass per folder: each sequence's smallest passing K). "
        "The validation false-positive rate is on all the held-out normal training sequences "
        f"({p['k_sweep_validation']['sequences']}, {p['k_sweep_validation']['distinct_sequences']} distinct, first seed; "
        "early stopping may use a subsample), the only figure a user without anomaly labels has "
        "to choose K by; test F1 (FP/FN) per seed:\n\n"
        "| K | validation FPR (mean) | test F1 (FP/FN) per seed | mean F1 |\n|---|---|---|---|\n"
        + _k_sweep_table(p["k_sweep_with_rl"], p["k"])
        + "\n"
    )


# ============================================================================ key representations
class TemplateTextLM:
    """Keys as template text (METHOD.md §3 option b): a sequence is the concatenation of its
    templates, one per line; a candidate's score is its tokens' summed log-probability, so the
    Top-K needs every candidate scored at every position (KV cache of the prefix reused)."""

    def __init__(self, keymap: Any, arch: Any, placement: Any) -> None:
        from peft import LoraConfig, TaskType, get_peft_model

        from model.backbones import load_decoder

        decoder, self.tokenizer = load_decoder(arch.decoder, placement)
        self.decoder = get_peft_model(
            decoder,
            LoraConfig(
                task_type=TaskType.CAUSAL_LM, r=arch.lora.r, lora_alpha=arch.lora.alpha,
                lora_dropout=arch.lora.dropout, target_modules=list(arch.lora.target_modules), bias="none",
            ),
        )
        tok = self.tokenizer
        self.keymap = keymap
        self.bos = [tok.bos_token_id] if tok.bos_token_id is not None else []
        self.eos = int(tok.eos_token_id)
        self.key_ids = [tok(t + "\n", add_special_tokens=False)["input_ids"] for t in keymap.templates]
        self.unk_ids = tok("<unk>\n", add_special_tokens=False)["input_ids"]
        self.candidates = [*self.key_ids, [self.eos]]  # keys, then the end of the session

    def _ids(self, key: int) -> list[int]:
        return self.unk_ids if key == self.keymap.unk else self.key_ids[key]

    def tokens(self, keys: tuple[int, ...]) -> list[int]:
        return self.bos + [t for k in keys for t in self._ids(k)] + [self.eos]

    def loss(self, batch_keys: list[tuple[int, ...]]) -> Any:
        import torch

        rows = [self.tokens(k) for k in batch_keys]
        length = max(len(r) for r in rows)
        ids = torch.full((len(rows), length), self.eos)
        labels = torch.full((len(rows), length), -100)
        mask = torch.zeros((len(rows), length), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
            labels[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = 1
        return self.decoder(input_ids=ids, attention_mask=mask, labels=labels).loss

    def outside(self, keys: tuple[int, ...], k: int) -> list[bool]:
        """Per target (k1..kn, end): is the observed key outside the Top-K of all candidates?"""
        import torch
        from transformers import DynamicCache

        cand = self.candidates
        width = max(len(c) for c in cand)
        ids = torch.full((len(cand), width), self.eos)
        cmask = torch.zeros((len(cand), width), dtype=torch.long)
        for j, c in enumerate(cand):
            ids[j, : len(c)] = torch.tensor(c)
            cmask[j, : len(c)] = 1
        flags = []
        with torch.inference_mode():
            cache = DynamicCache()
            out = self.decoder(input_ids=torch.tensor([self.bos or [self.eos]]), past_key_values=cache, use_cache=True)
            last = torch.log_softmax(out.logits[0, -1].float(), -1)
            for key in [*keys, None]:
                prefix = cache.get_seq_length()
                branch = copy.deepcopy(cache)
                branch.batch_repeat_interleave(len(cand))
                attn = torch.cat([torch.ones(len(cand), prefix, dtype=torch.long), cmask], dim=1)
                logp = torch.log_softmax(
                    self.decoder(input_ids=ids, attention_mask=attn, past_key_values=branch, use_cache=True).logits.float(), -1
                )
                follow = logp[:, :-1].gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1) * cmask[:, 1:]
                scores = last[ids[:, 0]] + follow.sum(-1)  # [C]
                target = len(cand) - 1 if key is None else key
                if key is not None and key == self.keymap.unk:
                    flags.append(True)
                else:
                    flags.append(bool((scores > scores[target]).sum() >= k))
                if key is not None:
                    step = self.decoder(input_ids=torch.tensor([self._ids(key)]), past_key_values=cache, use_cache=True)
                    last = torch.log_softmax(step.logits[0, -1].float(), -1)
        return flags


def compare_keys(args: argparse.Namespace) -> None:
    import numpy as np
    import torch

    from model.backbones import choose_placement
    from model.detector import RuntimeSettings
    from model.logkeys import LogKeyMap
    from model.logllama import LogLLaMAArchitecture, LogLLaMADetector, effective_k, outside_topk
    from training.config import DataConfig
    from training.data import build_split, load_dataset
    from training.logllama import KeyedData, LogLLaMATrainer, parse_logllama_config

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    data_config = DataConfig(kind="hdfs")
    dataset = load_dataset(data_config)
    split = build_split(data_config, dataset, require_both_classes=False)
    normal_train = [s for s in split.train if s.label == 0]
    keymap = LogKeyMap.fit(m for s in normal_train for m in s.messages)
    train_keys = list(dict.fromkeys(tuple(keymap.keys_of(s.messages)) for s in normal_train))
    train = [train_keys[i] for i in rng.permutation(len(train_keys))[: args.train]]
    test_normal = [split.test[i] for i in rng.permutation(len(split.test)) if split.test[i].label == 0][: args.test]
    test_anom = [s for s in split.test if s.label == 1][: args.test]
    held_normal = [tuple(keymap.keys_of(s.messages)) for s in test_normal]
    held_anom = [tuple(keymap.keys_of(s.messages)) for s in test_anom]
    k = effective_k(7, keymap.n_keys)
    runtime = RuntimeSettings(device="cpu", dtype="float32", quantize="off", batch_size=16, threads=args.threads)
    arch = LogLLaMAArchitecture()
    results: dict[str, Any] = {}

    def summarize(flags_normal: list[list[bool]], flags_anom: list[list[bool]]) -> dict[str, Any]:
        hits = sum(sum(not f for f in fl) for fl in flags_normal)
        total = sum(len(fl) for fl in flags_normal)
        return {
            "normal_topk_hit_rate": round(hits / total, 4),
            "normal_flagged": sum(any(fl) for fl in flags_normal),
            "anomalous_flagged": sum(any(fl) for fl in flags_anom),
        }

    # (a) added key tokens
    # Enough epochs that both representations take exactly `args.steps` steps of `args.batch` sequences.
    epochs = math.ceil(args.steps * args.batch / len(train))
    config = parse_logllama_config(
        {"lm": {"epochs": epochs, "max_steps": args.steps, "eval_every": 10**6, "batch_size": args.batch}}
    )
    detector = LogLLaMADetector.create(arch, keymap, 7, runtime, seed=0)
    keyed = KeyedData(keymap, train, [1.0] * len(train), train[:4], [1] * 4, ())
    trainer = LogLLaMATrainer(config, detector, keyed, show_progress=False)
    w0, c0 = time.perf_counter(), time.process_time()
    lm = trainer.train_lm()
    train_wall, train_cpu = time.perf_counter() - w0, time.process_time() - c0
    assert lm.steps == args.steps, f"added key tokens trained {lm.steps} steps, not {args.steps}"
    model = detector.model
    w0, c0 = time.perf_counter(), time.process_time()
    flag_sets = []
    for group in (held_normal, held_anom):
        flags = []
        for start in range(0, len(group), 16):
            batch = model.make_batch(group[start : start + 16])
            with torch.inference_mode():
                logits = model(batch)
            for i in range(len(batch.targets)):
                outside = outside_topk(logits[i], batch.targets[i], k) & batch.checked[i]
                flags.append([bool(x) for x, c in zip(outside.tolist(), batch.checked[i].tolist(), strict=True) if c])
        flag_sets.append(flags)
    score_wall, score_cpu = time.perf_counter() - w0, time.process_time() - c0
    n_scored = len(held_normal) + len(held_anom)
    results["key_tokens"] = {
        **summarize(*flag_sets),
        "train_steps": lm.steps,
        "train_wall_s_per_seq": round(train_wall / lm.sequences, 3),
        "train_cpu_s_per_seq": round(train_cpu / lm.sequences, 3),
        "score_wall_s_per_seq": round(score_wall / n_scored, 4),
        "score_cpu_s_per_seq": round(score_cpu / n_scored, 4),
        "decoder_positions_per_seq": round(float(np.mean([len(s) + 1 for s in held_normal])), 1),
    }
    del detector, trainer, model

    # (b) template text
    placement = choose_placement("cpu", "float32", "off")
    text = TemplateTextLM(keymap, arch, placement)
    optimizer = torch.optim.AdamW([p for n, p in text.decoder.named_parameters() if "lora_" in n], lr=config.lm.lr)
    w0, c0 = time.perf_counter(), time.process_time()
    seen = 0
    text.decoder.train()
    for step in range(args.steps):
        idx = rng.permutation(len(train))[: args.batch]
        loss = text.loss([train[i] for i in idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seen += len(idx)
        print(f"template text step {step + 1}/{args.steps}: loss {loss.item():.3f}", file=sys.stderr)
    train_wall, train_cpu = time.perf_counter() - w0, time.process_time() - c0
    text.decoder.eval()
    w0, c0 = time.perf_counter(), time.process_time()
    flag_sets = [[text.outside(s, k) for s in group] for group in (held_normal, held_anom)]
    score_wall, score_cpu = time.perf_counter() - w0, time.process_time() - c0
    results["template_text"] = {
        **summarize(*flag_sets),
        "train_steps": args.steps,
        "train_wall_s_per_seq": round(train_wall / seen, 3),
        "train_cpu_s_per_seq": round(train_cpu / seen, 3),
        "score_wall_s_per_seq": round(score_wall / n_scored, 4),
        "score_cpu_s_per_seq": round(score_cpu / n_scored, 4),
        "decoder_positions_per_seq": round(float(np.mean([len(text.tokens(s)) for s in held_normal])), 1),
        "candidate_positions_per_seq": round(
            float(np.mean([(len(s) + 1) * sum(len(c) for c in text.candidates) for s in held_normal])), 1
        ),
    }
    a, b = results["key_tokens"], results["template_text"]
    payload = {
        "dataset": f"HDFS_2pct split A: {len(train)} distinct normal training key sequences; held out: "
        f"{len(held_normal)} normal and {len(held_anom)} anomalous test blocks",
        "model": {"decoder": arch.decoder, "lora": arch.lora.model_dump(mode="json")},
        "k": k,
        "n_keys": keymap.n_keys,
        "steps": args.steps,
        "batch": args.batch,
        **results,
        "score_cost_ratio_cpu": round(b["score_cpu_s_per_seq"] / a["score_cpu_s_per_seq"], 1),
        "train_cost_ratio_cpu": round(b["train_cpu_s_per_seq"] / a["train_cpu_s_per_seq"], 1),
        "threads": torch.get_num_threads(),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    rows = "\n".join(
        f"| {name} | {r['normal_topk_hit_rate']} | {r['normal_flagged']}/{len(held_normal)} | "
        f"{r['anomalous_flagged']}/{len(held_anom)} | {r['train_cpu_s_per_seq']} | {r['score_cpu_s_per_seq']} | "
        f"{r['decoder_positions_per_seq']} |"
        for name, r in (("added key tokens (default)", a), ("template text", b))
    )
    markdown = (
        f"{payload['dataset']}; both trained {args.steps} steps of {args.batch} sequences (LoRA r8 on SmolLM2-135M, "
        f"LoRA LR {config.lm.lr:g}; the added key rows at {config.lm.key_lr:g}), K = {k} of {keymap.n_keys} keys + end. CPU fp32, shared machine: CPU seconds are the fairer cost.\n\n"
        "| keys as | Top-K hit rate (normal) | normal flagged | anomalous flagged | train CPU s/seq | score CPU s/seq | "
        "decoder positions/seq |\n|---|---|---|---|---|---|---|\n"
        f"{rows}\n\nScoring cost ratio (text / tokens, CPU): {payload['score_cost_ratio_cpu']}x; training: "
        f"{payload['train_cost_ratio_cpu']}x.\n"
    )
    write_result("logllama_keys", payload, markdown)
    print(markdown)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=("hdfs", "bgl"), help="train and evaluate on this dataset")
    parser.add_argument("--config", type=Path, help="LogLLaMA config (default training/configs/logllama_<dataset>.toml)")
    parser.add_argument("--seeds", type=int, nargs="+", help="one training run per seed (default: the config's seed)")
    parser.add_argument("--run-dir", type=Path, default=REPO / "runs" / "bench-logllama", help="where runs are written")
    parser.add_argument(
        "--reuse", action="store_true",
        help="reuse a finished run folder trained with the same config instead of retraining (its folders are re-scored)"
    )
    parser.add_argument("--compare-keys", action="store_true", help="added key tokens vs template text on a small subset")
    parser.add_argument("--train", type=int, default=96, help="--compare-keys: distinct normal training sequences")
    parser.add_argument("--test", type=int, default=24, help="--compare-keys: held-out normal and anomalous blocks each")
    parser.add_argument("--steps", type=int, default=24, help="--compare-keys: training steps for each representation")
    parser.add_argument("--batch", type=int, default=4, help="--compare-keys: sequences per step")
    parser.add_argument("--threads", type=int, help="torch CPU threads (--dataset: overrides the config's runtime.threads)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.compare_keys:
        compare_keys(args)
    elif args.dataset:
        run_dataset(args)
    else:
        parser.error("give --dataset or --compare-keys")


if __name__ == "__main__":
    main()
