"""Log anomaly detectors (LogLLM, LogLLaMA): preprocessing, model code, detector folders."""

import os

# Models are only ever loaded from local paths; never let transformers reach for a hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
