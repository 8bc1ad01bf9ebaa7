"""Log keys for LogLLaMA: raw messages -> Drain templates -> key indices, frozen after fitting.

A `LogKeyMap` is fitted once on training messages with drain3's `Drain` (after LogLLM's regex
cleaning, which turns block ids, IPs, paths and numbers into ``<*>``), or built from a fixed
template list (BGL's EventIds). After that it never changes: scoring only *matches* messages
against the frozen templates, and a message that matches none becomes `UNK`, which the
detector always treats as outside the Top-K (METHOD.md §3).

Persistence is our own JSON (`to_json` / `from_json`): the Drain settings, every cluster's
template tokens, and the prefix tree as nested objects of strings and integers. Loading
validates every field's type and rebuilds the `Drain` object from it, so the miner scores new
lines exactly as at training time, and reading a key file can never execute code (drain3's own
snapshots are jsonpickle, which can).

Key indices: ``0 .. n_keys-1`` are the templates in cluster-id order (= order of first
appearance while fitting, or the given order); ``n_keys`` is `UNK`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cachetools import LRUCache
from drain3.drain import Drain, LogCluster, Node

from model.errors import UserError
from model.preprocess import normalize_message

KEYMAP_FORMAT = "logllm-logkeys"
KEYMAP_VERSION = 1
UNK_NAME = "<unk>"
PARAM = "<*>"
_MAX_TREE_DEPTH = 64

MaskMode = Literal["logllm-v2", "none"]


@dataclass(frozen=True)
class DrainSettings:
    """drain3 `Drain` parameters (its defaults, which suit HDFS/BGL after the regex cleaning)."""

    sim_th: float = 0.4
    depth: int = 4
    max_children: int = 100
    parametrize_numeric_tokens: bool = True


def _mask(message: str, mode: MaskMode) -> str:
    return normalize_message(message, "v2") if mode == "logllm-v2" else message


def _new_drain(settings: DrainSettings) -> Drain:
    return Drain(
        sim_th=settings.sim_th,
        depth=settings.depth,
        max_children=settings.max_children,
        max_clusters=None,  # an LRU would evict templates, and keys must stay fixed
        param_str=PARAM,
        parametrize_numeric_tokens=settings.parametrize_numeric_tokens,
    )


class LogKeyMap:
    """Frozen mapping from raw log messages to key indices (templates + `UNK`).

    Build one with `fit` or `from_templates`; read one with `load`/`from_json`.
    """

    def __init__(
        self,
        drain: Drain,
        settings: DrainSettings,
        mask: MaskMode,
        names: Sequence[str],
        cluster_ids: Sequence[int],
        cache_size: int = 100_000,
    ) -> None:
        self._drain = drain
        self.settings = settings
        self.mask = mask
        self.names: tuple[str, ...] = tuple(names)
        self.cluster_ids: tuple[int, ...] = tuple(cluster_ids)
        self._key_of_cluster = {cid: i for i, cid in enumerate(self.cluster_ids)}
        self.templates: tuple[str, ...] = tuple(drain.id_to_cluster[cid].get_template() for cid in self.cluster_ids)
        # Exact template text first: a template given as a message (BGL's windows file) must map
        # to itself even where Drain would prefer a more general cluster of the same length.
        self._exact = {" ".join(t.split()): i for i, t in reversed(list(enumerate(self.templates)))}
        self._cache: LRUCache[str, int] = LRUCache(maxsize=max(cache_size, 1))
        self.hits = 0
        self.misses = 0

    # ------------------------------------------------------------------ construction
    @classmethod
    def fit(
        cls, messages: Iterable[str], settings: DrainSettings | None = None, mask: MaskMode = "logllm-v2"
    ) -> LogKeyMap:
        """Mine templates from `messages` (raw message text, header already stripped).

        Keys are the clusters in creation order. Templates can still generalise while fitting,
        so callers should map their training messages with `key_of` afterwards (as scoring will),
        not with what the miner returned during fitting.
        """
        settings = settings or DrainSettings()
        drain = _new_drain(settings)
        for message in messages:
            drain.add_log_message(_mask(message, mask))
        ids = sorted(drain.id_to_cluster)
        return cls(drain, settings, mask, [f"K{cid}" for cid in ids], ids)

    @classmethod
    def from_templates(
        cls,
        names: Sequence[str],
        templates: Sequence[str],
        settings: DrainSettings | None = None,
        mask: MaskMode = "none",
    ) -> LogKeyMap:
        """A key map whose keys are given templates (e.g. BGL EventId -> EventTemplate).

        Raises:
            ValueError: names and templates differ in length, or a name repeats.
        """
        if len(names) != len(templates):
            raise ValueError(f"{len(names)} key names but {len(templates)} templates")
        if len(set(names)) != len(names):
            raise ValueError("key names must be distinct")
        settings = settings or DrainSettings()
        drain = _new_drain(settings)
        for cid, template in enumerate(templates, start=1):
            cluster = LogCluster(drain.get_content_as_tokens(_mask(template, mask)), cid)
            drain.id_to_cluster[cid] = cluster
            drain.add_seq_to_prefix_tree(drain.root_node, cluster)
        drain.clusters_counter = len(templates)
        return cls(drain, settings, mask, names, list(range(1, len(templates) + 1)))

    def keeping(self, keys: Iterable[int]) -> LogKeyMap:
        """A map with only `keys` (indices into this map, order kept) as keys: every other
        template stays in the miner, so its messages still match it, and maps to `UNK`.

        Raises:
            ValueError: an index is not a key of this map.
        """
        kept = sorted(set(keys))
        if kept and not 0 <= kept[0] <= kept[-1] < self.n_keys:
            raise ValueError(f"key indices {kept} are not all within 0..{self.n_keys - 1}")
        return LogKeyMap(
            self._drain, self.settings, self.mask, [self.names[k] for k in kept], [self.cluster_ids[k] for k in kept],
            self._cache.maxsize,
        )

    # ------------------------------------------------------------------ mapping
    @property
    def n_keys(self) -> int:
        """Number of real keys (templates), without `UNK`."""
        return len(self.names)

    @property
    def unk(self) -> int:
        """The index of unseen templates (= `n_keys`)."""
        return len(self.names)

    def key_of(self, message: str) -> int:
        """The key index of one raw message; `unk` when no frozen template matches it."""
        masked = _mask(message, self.mask)
        cached = self._cache.get(masked)
        if cached is not None:
            self.hits += 1
            return cached
        self.misses += 1
        key = self._exact.get(" ".join(masked.split()))
        if key is None:
            cluster = self._drain.match(masked, full_search_strategy="fallback")
            key = self.unk if cluster is None else self._key_of_cluster.get(cluster.cluster_id, self.unk)
        self._cache[masked] = key
        return key

    def keys_of(self, messages: Iterable[str]) -> list[int]:
        return [self.key_of(m) for m in messages]

    def name(self, key: int) -> str:
        return UNK_NAME if key == self.unk else self.names[key]

    def template(self, key: int) -> str:
        return UNK_NAME if key == self.unk else self.templates[key]

    def stats(self) -> dict[str, float]:
        total = self.hits + self.misses
        return {"hits": self.hits, "misses": self.misses, "size": len(self._cache), "hit_ratio": self.hits / total if total else 0.0}

    # ------------------------------------------------------------------ persistence
    def to_json(self) -> dict[str, Any]:
        """Plain JSON (strings, numbers, lists, objects) holding everything `from_json` needs."""
        clusters = [
            {"id": cid, "tokens": list(self._drain.id_to_cluster[cid].log_template_tokens), "size": self._drain.id_to_cluster[cid].size}
            for cid in sorted(self._drain.id_to_cluster)
        ]
        return {
            "format": KEYMAP_FORMAT,
            "format_version": KEYMAP_VERSION,
            "mask": self.mask,
            "drain": {
                "sim_th": self.settings.sim_th,
                "depth": self.settings.depth,
                "max_children": self.settings.max_children,
                "parametrize_numeric_tokens": self.settings.parametrize_numeric_tokens,
                "clusters_counter": self._drain.clusters_counter,
            },
            "keys": [{"name": n, "cluster_id": c} for n, c in zip(self.names, self.cluster_ids, strict=True)],
            "clusters": clusters,
            "tree": _tree_to_json(self._drain.root_node),
        }

    @classmethod
    def from_json(cls, data: Any, source: str = "key map") -> LogKeyMap:
        """Rebuild a key map from `to_json` output, checking every field's type.

        Raises:
            UserError: the data is not a key map of this format (names `source` and the field).
        """
        try:
            return cls._from_json(data)
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"{source} is not a valid LogLLaMA key map ({exc}); re-copy or retrain the model folder") from exc

    @classmethod
    def _from_json(cls, data: Any) -> LogKeyMap:
        obj = _dict(data, "key map")
        if obj["format"] != KEYMAP_FORMAT or _int(obj["format_version"], "format_version") > KEYMAP_VERSION:
            raise ValueError(f"format {obj['format']!r} version {obj['format_version']!r} is not {KEYMAP_FORMAT} v1")
        mask = obj["mask"]
        if mask not in ("logllm-v2", "none"):
            raise ValueError(f"unknown mask {mask!r}")
        d = _dict(obj["drain"], "drain")
        settings = DrainSettings(
            sim_th=_float(d["sim_th"], "sim_th"),
            depth=_int(d["depth"], "depth"),
            max_children=_int(d["max_children"], "max_children"),
            parametrize_numeric_tokens=_bool(d["parametrize_numeric_tokens"], "parametrize_numeric_tokens"),
        )
        drain = _new_drain(settings)
        drain.clusters_counter = _int(d["clusters_counter"], "clusters_counter")
        for item in _list(obj["clusters"], "clusters"):
            c = _dict(item, "cluster")
            cid = _int(c["id"], "cluster id")
            cluster = LogCluster([_str(t, "token") for t in _list(c["tokens"], "tokens")], cid)
            cluster.size = _int(c["size"], "cluster size")
            drain.id_to_cluster[cid] = cluster
        drain.root_node = _tree_from_json(obj["tree"], 0)
        names, cluster_ids = [], []
        for item in _list(obj["keys"], "keys"):
            k = _dict(item, "key")
            names.append(_str(k["name"], "key name"))
            cid = _int(k["cluster_id"], "key cluster_id")
            if cid not in drain.id_to_cluster:
                raise ValueError(f"key {names[-1]!r} names cluster {cid}, which is not in the map")
            cluster_ids.append(cid)
        return cls(drain, settings, mask, names, cluster_ids)

    def save(self, path: Path) -> str:
        """Write the key map as JSON; returns its sha256 (recorded in the detector manifest)."""
        text = json.dumps(self.to_json(), indent=1, sort_keys=True) + "\n"
        path.write_text(text)
        return hashlib.sha256(text.encode()).hexdigest()

    @classmethod
    def load(cls, path: Path, sha256: str | None = None) -> LogKeyMap:
        """Read a key map written by `save`; with `sha256`, refuse a file that differs.

        Raises:
            UserError: missing, edited, or not a key map.
        """
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise UserError(f"cannot read the key map {path} ({exc.strerror}); re-copy the whole model folder") from exc
        if sha256 is not None and hashlib.sha256(raw).hexdigest() != sha256:
            raise UserError(f"{path} does not match its hash in the manifest (corrupt or edited); re-copy or retrain")
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise UserError(f"{path} is not readable JSON ({exc}); re-copy or retrain the model folder") from exc
        return cls.from_json(data, str(path))


# ---------------------------------------------------------------------- JSON helpers
def _tree_to_json(node: Node) -> dict[str, Any]:
    return {
        "cluster_ids": list(node.cluster_ids),
        "children": {token: _tree_to_json(child) for token, child in node.key_to_child_node.items()},
    }


def _tree_from_json(data: Any, depth: int) -> Node:
    if depth > _MAX_TREE_DEPTH:
        raise ValueError("prefix tree is deeper than any Drain setting allows")
    obj = _dict(data, "tree node")
    node = Node()
    node.cluster_ids = [_int(c, "tree cluster id") for c in _list(obj["cluster_ids"], "cluster_ids")]
    for token, child in _dict(obj["children"], "children").items():
        node.key_to_child_node[_str(token, "tree token")] = _tree_from_json(child, depth + 1)
    return node


def _dict(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError(f"{what} must be an object, got {type(value).__name__}")
    return value


def _list(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise TypeError(f"{what} must be a list, got {type(value).__name__}")
    return value


def _str(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a string, got {type(value).__name__}")
    return value


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an integer, got {type(value).__name__}")
    return value


def _float(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{what} must be a number, got {type(value).__name__}")
    return float(value)


def _bool(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{what} must be true or false, got {type(value).__name__}")
    return value
