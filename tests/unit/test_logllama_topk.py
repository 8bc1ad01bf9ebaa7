"""LogLLaMA's pure parts on hand-built cases: the Top-K rule, K capping, the sequence layout,
verdicts with line positions and their surprisal score, and the RL reward and loss."""

from __future__ import annotations

import math

import pytest
import torch

from model.logllama import (
    IGNORE,
    TIE_BREAK_WEIGHT,
    build_verdict,
    effective_k,
    key_batch,
    least_likely,
    outside_topk,
    smallest_passing_k,
    surprisal_score,
)
from training.logllama import k_sweep, k_sweep_markdown, reinforce_loss, reward_mask, topk_rewards, weighted_rows

INF = float("-inf")


def test_topk_rule_on_hand_built_logits() -> None:
    logits = torch.tensor(
        [
            [5.0, 4.0, 3.0, 2.0, INF],  # target 0: rank 0
            [5.0, 4.0, 3.0, 2.0, INF],  # target 2: rank 2
            [5.0, 4.0, 3.0, 2.0, INF],  # target 3: rank 3
            [5.0, 4.0, 3.0, 2.0, INF],  # target 4: a non-candidate (unk): always outside
        ]
    )
    targets = torch.tensor([0, 2, 3, 4])
    assert outside_topk(logits, targets, k=3).tolist() == [False, False, True, True]
    assert outside_topk(logits, targets, k=1).tolist() == [False, True, True, True]
    assert outside_topk(logits, targets, k=4).tolist() == [False, False, False, True]
    # Even with K covering every candidate, unk stays outside.
    assert outside_topk(logits, targets, k=100).tolist() == [False, False, False, True]


def test_ties_count_for_the_observed_key() -> None:
    logits = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    assert outside_topk(logits, torch.tensor([2]), k=1).tolist() == [False]
    assert outside_topk(logits, torch.tensor([0]), k=1).tolist() == [False]
    assert outside_topk(logits, torch.tensor([3]), k=4).tolist() == [False]
    assert outside_topk(logits, torch.tensor([3]), k=3).tolist() == [True]


def test_smallest_passing_k_on_hand_built_logits() -> None:
    logits = torch.tensor([[5.0, 4.0, 4.0, 2.0, INF]] * 4)
    # key 0 first; key 2 ties with key 1, so it passes at K = 2; key 3 needs K = 4; unk never passes.
    assert smallest_passing_k(logits, torch.tensor([0, 2, 3, 4])).tolist() == [1.0, 2.0, 4.0, math.inf]


def test_smallest_passing_k_gives_the_rule_at_every_k() -> None:
    """Flagged at K exactly when the smallest passing K exceeds K, so one pass labels every K;
    also on a [B, L, C] batch with a non-candidate column."""
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 6, 9, generator=generator).round(decimals=1)  # rounding makes ties
    logits[..., 8] = INF
    targets = torch.randint(0, 9, (3, 6), generator=generator)
    needed = smallest_passing_k(logits, targets)
    for k in range(1, 10):
        assert torch.equal(outside_topk(logits, targets, k), needed > k)


def test_k_sweep_counts_on_hand_built_sequences() -> None:
    # test: smallest passing K per sequence with labels; validation: normal, weighted by count.
    rows = k_sweep([1, 3, math.inf, 2, 5], [0, 0, 1, 1, 1], 4, validation=([1, 2, 4], [10, 5, 1]))
    assert [r["k"] for r in rows] == [1, 2, 3, 4]
    at = {r["k"]: r for r in rows}
    # K = 2: flagged are 3, inf, 5 -> TP 2 (inf, 5), FP 1 (3), FN 1 (2); validation: 4 -> 1 of 16.
    assert (at[2]["tp"], at[2]["fp"], at[2]["fn"], at[2]["tn"]) == (2, 1, 1, 1)
    assert at[2]["validation_false_positive_rate"] == pytest.approx(1 / 16)
    assert at[2]["f1"] == pytest.approx(2 / 3)
    # K = 1: every sequence but the first flagged; validation 2 and 4 -> 6 of 16.
    assert (at[1]["tp"], at[1]["fp"]) == (3, 1) and at[1]["validation_false_positive_rate"] == pytest.approx(6 / 16)
    # K = 4: only the unseen key (inf) and the 5 stay flagged; no validation sequence.
    assert (at[4]["tp"], at[4]["fp"], at[4]["fn"]) == (2, 0, 1) and at[4]["validation_false_positive_rate"] == 0
    # Without validation sequences (`logllm eval`): the same test figures, and no rate to read.
    without = k_sweep([1, 3, math.inf, 2, 5], [0, 0, 1, 1, 1], 4)
    assert [{k: v for k, v in r.items() if k != "validation_false_positive_rate"} for r in rows] == without
    assert all("validation_false_positive_rate" not in r for r in without)


def test_k_sweep_table_shows_the_chosen_k_and_every_k_where_the_labels_change() -> None:
    rows = k_sweep([1, 3, math.inf, 2, 5, 5], [0, 0, 1, 1, 1, 1], 7)
    table = k_sweep_markdown(rows, chosen_k=7).splitlines()
    # Labels change at K = 2, 3 and 5 (from K = 5 on only the unseen key is flagged); 4 and 6 repeat.
    assert [line.split(" | ")[0].removeprefix("| ") for line in table[2:]] == ["1", "2", "3", "5", "**7**"]
    assert table[-1] == "| **7** | 1.0000 | 0.2500 | 0.4000 | 1 | 0 | 3 | 2 |"


@pytest.mark.parametrize(
    ("k", "n_keys", "expected"),
    [(7, 15, 7), (7, 8, 7), (7, 7, 6), (80, 50, 47), (690, 300, 285), (7, 2, 1), (7, 1, 1), (3, 100, 3)],
)
def test_k_is_capped_at_95_percent_of_the_vocabulary(k: int, n_keys: int, expected: int) -> None:
    assert effective_k(k, n_keys) == expected == max(1, min(k, math.floor(0.95 * n_keys)))


def test_session_layout_predicts_every_key_and_the_end() -> None:
    n_keys = 5  # unk 5, eos 6, start 7
    batch = key_batch([(0, 1, 2), (3, 5)], n_keys, "session", max_keys=10)
    assert batch.inputs.tolist() == [[7, 0, 1, 2], [7, 3, 5, 7]]
    assert batch.targets.tolist() == [[0, 1, 2, 6], [3, 5, 6, IGNORE]]
    assert batch.mask.tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]
    assert batch.checked.tolist() == [[True, True, True, True], [True, True, True, False]]


def test_window_layout_has_no_end_and_skips_the_first_key() -> None:
    batch = key_batch([(0, 1, 2)], 5, "window", max_keys=10)
    assert batch.targets.tolist() == [[0, 1, 2, IGNORE]]
    assert batch.checked.tolist() == [[False, True, True, False]]


def test_a_cut_session_gets_no_end_target() -> None:
    batch = key_batch([(0, 1, 2, 3, 4)], 5, "session", max_keys=3)
    assert batch.inputs.tolist() == [[7, 0, 1, 2]]
    assert batch.targets.tolist() == [[0, 1, 2, IGNORE]]


def test_verdict_positions_are_the_failed_lines() -> None:
    keys = (0, 1, 5, 2)
    ok = build_verdict(keys, [False] * 5, 5, 7, "logllama-x", (math.log(4), 1, 8))
    assert (ok.label, ok.positions, ok.score_positions) == (0, (), (1,))
    assert ok.score == pytest.approx((1 - TIE_BREAK_WEIGHT) * math.log(4) / (math.log(4) + math.log(8)))
    assert "least likely #1 1 (p=0.25)" in ok.answer
    bad = build_verdict(keys, [False, False, True, False, True], 5, 7, "logllama-x", (math.inf, 2, 8), lambda k: f"K{k}")
    assert bad.label == 1 and bad.score == pytest.approx(1 - TIE_BREAK_WEIGHT + TIE_BREAK_WEIGHT * 2 / 5)
    # Equally surprising least likely keys (both unseen): more keys outside scores higher.
    worse = build_verdict(keys, [False, True, True, False, True], 5, 7, "logllama-x", (math.inf, 2, 8))
    assert bad.score < worse.score <= 1.0
    # Target 2 is line 2; target 4 is the end of the session, reported at the last line (3).
    assert bad.positions == (2, 3)
    assert bad.score_positions == (2,)
    # The least likely target is the end of the session: it points at the last line, as positions do.
    assert build_verdict(keys, [False] * 5, 5, 7, "logllama-x", (2.0, 4, 8)).score_positions == (3,)
    # Nothing checked (a one-key window): nothing to point at.
    assert build_verdict((4,), [False], 0, 7, "logllama-x", (0.0, 0, 8)).score_positions == ()
    assert "#2 K5" in bad.answer and "end of sequence" in bad.answer and "least likely #2 K5 (unseen)" in bad.answer
    assert bad.model_version == "logllama-x"


def test_least_likely_is_the_checked_target_with_the_lowest_probability() -> None:
    logits = torch.tensor(
        [
            [2.0, 0.0, 0.0, INF],  # target 1: p = 1 / (e^2 + 2)
            [0.0, 0.0, 9.0, INF],  # target 0: far less likely, but not checked
            [0.0, 0.0, 0.0, INF],  # target 2: p = 1/3
            [0.0, 0.0, 0.0, 0.0],  # padding
        ]
    )
    targets = torch.tensor([1, 0, 2, IGNORE])
    checked = torch.tensor([True, False, True, False])
    surprisal, at, candidates = least_likely(logits, targets, checked)
    assert (at, candidates) == (0, 3)
    assert surprisal == pytest.approx(math.log(math.e**2 + 2))
    # A non-candidate target (unk) is infinitely surprising; nothing checked is no surprise.
    assert least_likely(logits, torch.tensor([3, 0, 0, 0]), checked)[:2] == (math.inf, 0)
    assert least_likely(logits, targets, torch.zeros(4, dtype=torch.bool))[0] == 0.0


def test_surprisal_score_is_monotone_in_zero_one() -> None:
    scores = [surprisal_score(s, 16) for s in (0.0, 1.0, math.log(16), 10.0, 100.0, math.inf)]
    assert scores[0] == 0.0 and scores[2] == pytest.approx(0.5) and scores[-1] == 1.0
    assert scores == sorted(scores) and all(0.0 <= x <= 1.0 for x in scores)


def test_reward_mask_skips_the_prompt_padding_and_unk() -> None:
    n_keys = 5
    batch = key_batch([(0, 1, 2, 3, 4, 0, 1, 2, 3), (0, 5, 1)], n_keys, "session", max_keys=50)
    rewarded = reward_mask(batch.targets, batch.checked, unk=n_keys, prompt_fraction=0.2)
    # First row: 10 targets, prompt = floor(0.2*10) = 2 leading targets.
    assert rewarded[0].tolist() == [False, False] + [True] * 8
    # Second row: 4 targets, prompt = floor(0.8) = 0; the unk target and padding earn nothing.
    assert rewarded[1].tolist()[:4] == [True, False, True, True]
    assert not rewarded[1, 4:].any()


def test_topk_rewards_are_plus_minus_one() -> None:
    logits = torch.tensor([[[3.0, 2.0, 1.0], [3.0, 2.0, 1.0]]])
    assert topk_rewards(logits, torch.tensor([[1, 2]]), k=2).tolist() == [[1.0, -1.0]]


def test_reinforce_loss_scales_log_likelihood_by_the_clipped_reward() -> None:
    logits = torch.tensor([[[2.0, 0.0, 0.0, INF], [2.0, 0.0, 0.0, INF], [0.0, 2.0, 0.0, INF]]], requires_grad=True)
    targets = torch.tensor([[0, 0, 1]])
    rewarded = torch.tensor([[True, True, True]])
    logp = torch.log_softmax(logits.detach(), -1)
    sum_logp = float(logp[0, 0, 0] + logp[0, 1, 0] + logp[0, 2, 1])
    loss, stats = reinforce_loss(logits, targets, rewarded, k=1, clip=10.0, entropy_coef=0.0)
    assert stats["reward"] == pytest.approx(1.0)
    assert float(loss.detach()) == pytest.approx(-sum_logp * 3)
    clipped, _ = reinforce_loss(logits, targets, rewarded, k=1, clip=2.0, entropy_coef=0.0)
    assert float(clipped) == pytest.approx(-sum_logp * 2)
    # All three observed keys are top-1: the gradient raises their log-probability.
    loss.backward()
    assert logits.grad is not None and float(logits.grad[0, 0, 0]) < 0


def test_entropy_bonus_lowers_the_loss_of_flatter_predictions() -> None:
    targets, rewarded = torch.tensor([[0]]), torch.tensor([[True]])
    sharp = torch.tensor([[[4.0, 0.0, 0.0]]])
    base, stats = reinforce_loss(sharp, targets, rewarded, k=1, clip=10.0, entropy_coef=0.0)
    bonus, _ = reinforce_loss(sharp, targets, rewarded, k=1, clip=10.0, entropy_coef=0.5)
    assert float(bonus) == pytest.approx(float(base) - 0.5 * stats["entropy"])
    assert stats["entropy"] > 0


# ---------------------------------------------------------------------------- configuration
def test_shipped_configs_validate_with_the_method_defaults() -> None:
    from pathlib import Path

    from training.logllama import config_selects_logllama, load_logllama_config

    configs = Path(__file__).resolve().parents[2] / "training" / "configs"
    hdfs = load_logllama_config(configs / "logllama_hdfs.toml")
    bgl = load_logllama_config(configs / "logllama_bgl.toml")
    assert (hdfs.detection_k, hdfs.architecture.sequence_kind, hdfs.rl.algorithm) == (7, "session", "reinforce")
    assert (bgl.detection_k, bgl.architecture.sequence_kind) == (80, "window")
    assert config_selects_logllama(configs / "logllama_hdfs.toml")
    # The unlabelled HDFS config is the same recipe and block split with the labels left out.
    unlabelled = load_logllama_config(configs / "logllama_hdfs_unlabelled.toml")
    assert unlabelled.data.assume_normal and unlabelled.data.labels is None
    assert unlabelled.model_dump(exclude={"data", "output", "rl"}) == hdfs.model_dump(exclude={"data", "output", "rl"})
    assert unlabelled.rl.model_dump(exclude={"control"}) == hdfs.rl.model_dump(exclude={"control"})
    split = ("split", "seed", "test_ratio")
    assert [getattr(unlabelled.data, f) for f in split] == [getattr(hdfs.data, f) for f in split]


def test_defaults_follow_the_data_and_typos_are_errors(tmp_path: object) -> None:
    from pathlib import Path

    from model.errors import UserError
    from training.logllama import config_selects_logllama, parse_logllama_config

    assert parse_logllama_config({"data": {"kind": "bgl_windows"}}).detection_k == 80
    windows = parse_logllama_config({"data": {"kind": "raw", "path": "x.log", "window": 20}})
    assert windows.architecture.sequence_kind == "window" and windows.detection_k == 7
    with pytest.raises(UserError, match="rl.entropy"):
        parse_logllama_config({"rl": {"entropy": 0.1}})
    with pytest.raises(UserError, match="rl.algorithm"):
        parse_logllama_config({"rl": {"algorithm": "a2c"}})
    plain = Path(str(tmp_path)) / "logllm.toml"
    plain.write_text('[data]\nkind = "hdfs"\n')
    assert not config_selects_logllama(plain)


def test_a_control_without_the_rl_stage_is_a_config_error() -> None:
    from model.errors import UserError
    from training.logllama import parse_logllama_config

    with pytest.raises(UserError, match="rl.control"):
        parse_logllama_config({"rl": {"enabled": False, "control": True}})
    assert parse_logllama_config({"rl": {"control": True}}).rl.control


def test_weighted_rows_split_heavy_sequences_and_keep_every_copy() -> None:
    rows, weights = weighted_rows([(1, 2), (3,), (4, 5, 6)], [35, 1, 16], max_weight=16)
    assert rows == [(1, 2)] * 3 + [(3,)] + [(4, 5, 6)]
    assert max(weights) / min(weights) == 16  # 35 copies as three rows of 35/3; one row of 16
    assert sum(weights) == pytest.approx(len(rows))  # mean 1 per row
    copies = {row: 0.0 for row in rows}
    for row, weight in zip(rows, weights, strict=True):
        copies[row] += weight
    scale = 52 / len(rows)  # copies per unit of weight
    assert {row: round(total * scale, 9) for row, total in copies.items()} == {(1, 2): 35, (3,): 1, (4, 5, 6): 16}


def test_templates_too_rare_in_normal_training_become_unk() -> None:
    from model.errors import UserError
    from model.logkeys import LogKeyMap
    from training.logllama import without_rare_keys

    keymap = LogKeyMap.from_templates(["A", "B", "C"], ["start <*>", "rare error <*>", "end <*>"])
    normal = [[0, 2]] * 998 + [[0, 1, 1, 1, 2]] * 2  # B: many lines but in 2 of 1,000 sequences
    same, dropped = without_rare_keys(keymap, normal, 0.0)
    assert same is keymap and dropped == []
    pruned, dropped = without_rare_keys(keymap, normal, 0.003)
    assert dropped == [{"template": "rare error <*>", "sequences": 2}]
    assert pruned.names == ("A", "C")
    assert pruned.keys_of(["start 1", "rare error 7", "end 2"]) == [0, pruned.unk, 1]
    assert without_rare_keys(keymap, normal, 0.002)[1] == []  # 2 of 1,000 is not below 0.2%
    with pytest.raises(UserError, match="leaves no key"):
        without_rare_keys(keymap, [[0], [1], [2]], 0.5)  # each key in 1 of 3 sequences


def test_prepare_data_turns_rare_normal_templates_into_unk_for_training_and_test() -> None:
    from training.data import Dataset, LabelledSequence
    from training.logllama import parse_logllama_config, prepare_data

    def block(i: int, label: int, rare: bool) -> LabelledSequence:
        lines = [f"Receiving block blk_{i} src: /10.0.0.1:5 dest: /10.0.0.2:6", f"Deleting block blk_{i} file /d/{i}"]
        if rare:
            lines.insert(1, f"Unexpected error trying to delete block blk_{i}. BlockInfo not found in volumeMap.")
        return LabelledSequence(f"blk_{i}", tuple(lines), label, i)

    # 1 of ~480 normal training blocks holds the rare line; the anomalous ones all do.
    dataset = Dataset("tiny", tuple(block(i, int(i % 50 == 7), rare=i == 3 or i % 50 == 7) for i in range(600)))
    config = parse_logllama_config({"data": {"kind": "hdfs", "split": "random"}, "min_key_share": 0.01})
    data = prepare_data(config, dataset)
    assert data.keymap.n_keys == 2
    assert [r["template"].startswith("Unexpected error") for r in data.summary["rare_templates_as_unk"]] == [True]
    assert data.summary["rare_templates_as_unk"][0]["sequences"] <= 1
    holding = [s for s in data.test if any(m.startswith("Unexpected") for m in s.messages)]
    assert holding and all(data.keymap.unk in data.keymap.keys_of(s.messages) for s in holding)
    assert prepare_data(parse_logllama_config({"data": {"kind": "hdfs", "split": "random"}}), dataset).keymap.n_keys == 3


def test_a_validation_subsample_keeps_every_held_out_sequence_for_the_k_sweep() -> None:
    from training.data import Dataset, LabelledSequence
    from training.logllama import parse_logllama_config, prepare_data

    def block(i: int) -> LabelledSequence:  # 1-7 receive lines: 7 distinct key sequences
        receives = [f"Receiving block blk_{i} src: /10.0.0.1:{j} dest: /10.0.0.2:6" for j in range(1 + i % 7)]
        return LabelledSequence(f"blk_{i}", (*receives, f"Deleting block blk_{i} file /d/{i}"), 0, i)

    dataset = Dataset("tiny", tuple(block(i) for i in range(300)))
    raw = {"data": {"kind": "hdfs", "split": "random"}, "val_fraction": 0.2}
    data = prepare_data(parse_logllama_config({**raw, "max_val_sequences": 3}), dataset)
    full = prepare_data(parse_logllama_config(raw), dataset)
    assert len(data.val) == 3 and sum(data.val_counts) < data.summary["normal_val"]
    validation, counts = data.all_validation
    assert sum(counts) == data.summary["normal_val"] and len(validation) == 7
    assert sorted(zip(validation, counts, strict=True)) == sorted(zip(full.val, full.val_counts, strict=True))
    assert full.all_validation == (full.val, full.val_counts)
