"""The classic baseline beside LogLLM: drain3 templates -> event-count vectors -> a classifier.

As in loglizer (He et al., "Experience Report: System Log Analysis for Anomaly Detection",
ISSRE 2016): a log parser maps every message to a template (an event), each sequence becomes
the vector of its event counts, and a supervised classifier (decision tree by default, or
logistic regression) learns the labels. Templates are mined from the training sequences only.
Test messages go through the same drain3 instance, which keeps learning as Drain does over a
whole log (a cluster's id never changes when its template generalises); a test message whose
cluster was created after training is an unseen event and, as in loglizer's feature extractor,
contributes no count (`unseen_messages` counts them).

drain3 settings: similarity 0.4, depth 4 (its defaults), with masks for HDFS block ids, IPs
with ports, hex numbers and numbers, so values do not split templates.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from model.errors import UserError

log = logging.getLogger(__name__)

Classifier = Literal["decision_tree", "logistic_regression"]

MASKS: tuple[tuple[str, str], ...] = (
    (r"blk_-?\d+", "BLK"),
    (r"\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?", "IP"),
    (r"0[xX][0-9a-fA-F]+", "HEX"),
    (r"(?<![A-Za-z])-?\d+(?:\.\d+)?(?![A-Za-z])", "NUM"),
)


def _new_miner() -> Any:
    from drain3 import TemplateMiner
    from drain3.masking import MaskingInstruction
    from drain3.template_miner_config import TemplateMinerConfig

    config = TemplateMinerConfig()
    config.masking_instructions = [MaskingInstruction(pattern, name) for pattern, name in MASKS]
    config.profiling_enabled = False
    return TemplateMiner(config=config)


class TemplateCountBaseline:
    """drain3 + event counts + a scikit-learn classifier; fit on training sequences only."""

    name = "baseline"

    def __init__(self, classifier: Classifier = "decision_tree", seed: int = 42) -> None:
        self.classifier_name = classifier
        self.seed = seed
        self.version = f"baseline-drain3-{classifier}"
        self._miner: Any = None
        self._event_of: dict[str, int] = {}
        self._columns: dict[int, int] = {}
        self._model: Any = None
        self.unseen_messages = 0

    def _event(self, message: str) -> int:
        event = self._event_of.get(message)
        if event is None:
            event = self._event_of[message] = int(self._miner.add_log_message(message)["cluster_id"])
        return event

    def _vectors(self, sequences: Sequence[Sequence[str]]) -> np.ndarray:
        x = np.zeros((len(sequences), len(self._columns)), dtype=np.float32)
        for i, seq in enumerate(sequences):
            for message in seq:
                column = self._columns.get(self._event(message))
                if column is None:
                    self.unseen_messages += 1
                else:
                    x[i, column] += 1
        return x

    def fit(self, sequences: Sequence[Sequence[str]], labels: Sequence[int]) -> TemplateCountBaseline:
        """Mine templates from `sequences` and train the classifier.

        Raises:
            UserError: empty input or a single class.
        """
        if not sequences or len(set(labels)) < 2:
            raise UserError("the baseline needs training sequences of both classes")
        from sklearn.linear_model import LogisticRegression
        from sklearn.tree import DecisionTreeClassifier

        started = time.perf_counter()
        self._miner = _new_miner()
        self._event_of = {}
        for seq in sequences:
            for message in seq:
                self._event(message)
        events = sorted(set(self._event_of.values()))
        self._columns = {e: i for i, e in enumerate(events)}
        x = self._vectors(sequences)
        if self.classifier_name == "decision_tree":
            self._model = DecisionTreeClassifier(random_state=self.seed)
        else:
            self._model = LogisticRegression(max_iter=2000, class_weight="balanced", random_state=self.seed)
        self._model.fit(x, np.asarray(labels))
        log.info(
            "baseline: %d templates from %d distinct messages, fit in %.1f s",
            len(events), len(self._event_of), time.perf_counter() - started,
        )
        return self

    @property
    def n_templates(self) -> int:
        return len(self._columns)

    def predict(self, sequences: Sequence[Sequence[str]]) -> tuple[list[int], list[float]]:
        """Labels and anomaly scores (the classifier's probability of the anomalous class)."""
        if self._model is None:
            raise RuntimeError("fit the baseline before predicting")
        self.unseen_messages = 0
        x = self._vectors(sequences)
        proba = self._model.predict_proba(x)[:, list(self._model.classes_).index(1)]
        return [int(p > 0.5) for p in proba], [float(p) for p in proba]
