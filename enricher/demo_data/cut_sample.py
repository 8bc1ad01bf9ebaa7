"""How `hdfs_sample.log.gz` and `hdfs_sample_labels.csv` were cut (kept for reproducibility;
the demo itself only reads the two files).

    python enricher/demo_data/cut_sample.py [--anomalous 20] [--normal 130] [--seed 7]

Blocks come only from the *test* side of the shipped detector's split (random by block, seed
42, test ratio 0.2 over HDFS_2pct.log: `model/shipped/logllm-small-hdfs/manifest.json`), so the
demo scores blocks the detector never saw in training. Of those, a fixed-seed random choice of
anomalous and normal blocks; every line of each chosen block, unchanged and in log order.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import re
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from training.data import load_hdfs, make_split  # noqa: E402
from training.shared_data import HDFS_2PCT, HDFS_LABELS  # noqa: E402

BLOCK = re.compile(r"blk_-?\d+")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--anomalous", type=int, default=20)
    parser.add_argument("--normal", type=int, default=130)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    split = make_split(load_hdfs(HDFS_2PCT, HDFS_LABELS), "random", 0.2, 42)
    rng = np.random.default_rng(args.seed)
    chosen: dict[str, int] = {}
    for label, count in ((1, args.anomalous), (0, args.normal)):
        keys = sorted(s.key for s in split.test if s.label == label)
        for index in rng.choice(len(keys), size=count, replace=False):
            chosen[keys[int(index)]] = label
    lines = []
    with HDFS_2PCT.open(encoding="utf-8") as log:
        for line in log:
            keys = set(BLOCK.findall(line))
            if keys & chosen.keys():
                lines.append(line)
    with gzip.open(HERE / "hdfs_sample.log.gz", "wt", encoding="utf-8", compresslevel=9) as out:
        out.writelines(lines)
    with (HERE / "hdfs_sample_labels.csv").open("w", newline="") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["BlockId", "Label"])
        for key, label in chosen.items():
            writer.writerow([key, "Anomaly" if label else "Normal"])
    print(f"{len(lines)} lines, {len(chosen)} blocks ({args.anomalous} anomalous)")


if __name__ == "__main__":
    main()
