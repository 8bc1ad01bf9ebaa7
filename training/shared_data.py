"""Paths of the public benchmark data (HDFS, BGL) used by training, tests and benchmarks.

The data sits beside the repository in ``../shared/data``; a clone elsewhere (CI's fresh
clone in a temporary folder) finds it through ``$LOGLLM_SHARED_DATA`` or the workplace path.
"""

import os
from pathlib import Path


def _shared_data() -> Path:
    """The first candidate folder that holds HDFS/ (and BGL/)."""
    candidates = [
        os.environ.get("LOGLLM_SHARED_DATA"),
        Path(__file__).resolve().parents[2] / "shared" / "data",  # beside the repository
        "/work/shared/data",
    ]
    for candidate in candidates:
        if candidate and (Path(candidate) / "HDFS").is_dir():
            return Path(candidate)
    # Not found: keep the conventional path so a missing file is reported by whoever opens it.
    return Path(candidates[1])


SHARED_DATA = _shared_data()
HDFS_DIR = SHARED_DATA / "HDFS"
BGL_DIR = SHARED_DATA / "BGL"
HDFS_2K = HDFS_DIR / "HDFS_2k.log"
HDFS_HEAD20K = HDFS_DIR / "HDFS_head20k.log"
HDFS_HEAD20K_LABELS = HDFS_DIR / "anomaly_label_head20k.csv"
HDFS_2PCT = HDFS_DIR / "HDFS_2pct.log"
HDFS_LABELS = HDFS_DIR / "anomaly_label.csv"
BGL_2K = BGL_DIR / "BGL_2k.log"
BGL_WINDOWS = BGL_DIR / "BGL_windows100.csv"
BGL_TEMPLATES = BGL_DIR / "BGL_windows100_templates.csv"
