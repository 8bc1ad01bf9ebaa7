"""Pure preprocessing: the LogLLM regex normalisation and sequence building.

LogLLM (METHOD.md §1.1) cleans a whole sequence string -- messages joined by " ;-; " -- and
splits it afterwards. None of the rules can match across that separator (no rule matches
whitespace inside a token, and the separator is surrounded by spaces), so cleaning each message
on its own gives the same result; tests/unit/test_preprocess.py checks that equivalence on the
shipped HDFS and BGL lines. Per-message cleaning is what makes the embedding cache possible.

Everything here is pure: no I/O, no model.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Literal

RegexSet = Literal["v1", "v2"]

# Bumped whenever the output of `normalize_message` changes for some input; it is stored in
# every detector manifest so a folder trained with other preprocessing is refused.
PREPROCESSING_VERSION = 1

SEQUENCE_SEPARATOR = " ;-; "
PLACEHOLDER = "<*>"
MAX_MESSAGES_PER_SEQUENCE = 128
MAX_TOKENS_PER_MESSAGE = 100

_NUMBER_WORDS = (
    "zero|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|"
    "fifteen|sixteen|seventeen|eighteen|nineteen|twenty|thirty|forty|fifty|sixty|seventy|"
    "eighty|ninety|hundred|thousand|million|billion"
)
_WEEKDAYS = "Mon|Monday|Tue|Tuesday|Wed|Wednesday|Thu|Thursday|Fri|Friday|Sat|Saturday|Sun|Sunday"
_MONTHS = (
    "Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|Jun(?:e)?|Jul(?:y)?|Aug(?:ust)?|"
    "Sep(?:tember)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?"
)
_WORD_WITH_DIGIT = r"[a-zA-Z.:\-_]*\d[a-zA-Z0-9.:\-_]*"
_PATH_V2 = r"[a-zA-Z0-9]*[:.]*(?:[/\\]+[^/\\\s\[\]]+)+[/\\]*"
_PATH_V1 = r"[a-zA-Z0-9]*:*(?:[/\\]+[^/\\\s]+)+[/\\]*"
_EMAIL_WITH_DASH = r"\w+[\w.]*@\w+[\w.]*-\w+[\w.]*"
_EMAIL = r"\w+[\w.]*@\w+[\w.]*"

# The 16 rules of the current official code, in order: the regex alternation tries them left to
# right at each position, so the first listed rule wins (METHOD.md §1.1).
_RULES_V2: tuple[str, ...] = (
    r"True",
    r"true",
    r"False",
    r"false",
    rf"\b(?:{_NUMBER_WORDS})\b",
    rf"\b(?:{_WEEKDAYS})\b",
    rf"\b(?:{_MONTHS})\s+\d{{1,2}}\s+\b",
    r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}(?::\d{1,5})?",
    r"(?:[0-9A-Fa-f]{2}:){11}[0-9A-Fa-f]{2}",
    r"(?:[0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2}",
    _PATH_V2,
    r"\b[0-9a-fA-F]{8}\b",
    r"\b[0-9a-fA-F]{10}\b",
    _EMAIL_WITH_DASH,
    _EMAIL,
    _WORD_WITH_DIGIT,
)
# The two rules the official code had until Feb 2025 (path rule still allowing brackets).
_RULES_V1: tuple[str, ...] = (
    _PATH_V1,
    _WORD_WITH_DIGIT,
)
_RULES: dict[str, tuple[str, ...]] = {"v1": _RULES_V1, "v2": _RULES_V2}

# Rules that can only match text holding one of these characters. A message without them cannot
# match the rule anywhere, so leaving it out of the alternation changes no match; and these are
# the costly rules (their nested quantifiers rescan every word: ~2x the time of all the others on
# HDFS lines, which have paths but no e-mail addresses).
_NEEDS: dict[str, str] = {_PATH_V2: "/\\", _PATH_V1: "/\\", _EMAIL_WITH_DASH: "@", _EMAIL: "@"}
_GATES = frozenset(_NEEDS.values())

_ELLIPSIS = re.compile(r"\.{3,}")


@cache
def _alternation(regex_set: str, present: frozenset[str]) -> re.Pattern[str]:
    """The rules of `regex_set`, in order, less those whose needed characters (a `_GATES` entry)
    are not in `present`."""
    return re.compile("|".join(r for r in _RULES[regex_set] if r not in _NEEDS or _NEEDS[r] in present))


def normalize_message(message: str, regex_set: RegexSet = "v2") -> str:
    """Return `message` with variable parts replaced by ``<*>`` (LogLLM's cleaning).

    Step 0 turns runs of three or more dots into ``".. "``; step 1 replaces every match of the
    rule alternation with ``<*>``. No lower-casing.

    Raises:
        KeyError: `regex_set` is not "v1" or "v2" (settings validation prevents this).
    """
    text = _ELLIPSIS.sub(".. ", message)
    present = frozenset(gate for gate in _GATES if any(c in text for c in gate))
    return _alternation(regex_set, present).sub(PLACEHOLDER, text)


def normalize_sequence(
    messages: Sequence[str],
    regex_set: RegexSet = "v2",
    max_messages: int = MAX_MESSAGES_PER_SEQUENCE,
) -> tuple[str, ...]:
    """Normalise a sequence for LogLLM: the first `max_messages` messages, each cleaned."""
    return tuple(normalize_message(m, regex_set) for m in messages[:max_messages])


def normalize_joined(messages: Sequence[str], regex_set: RegexSet = "v2") -> list[str]:
    """The official whole-string form: join, clean once, split. Kept as the reference that
    `normalize_message` is tested against; production code cleans per message."""
    joined = SEQUENCE_SEPARATOR.join(messages)
    cleaned = _alternation(regex_set, _GATES).sub(PLACEHOLDER, _ELLIPSIS.sub(".. ", joined))
    return cleaned.split(SEQUENCE_SEPARATOR)


# --------------------------------------------------------------------------------------------
# Raw log line formats
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LogLine:
    """One parsed raw log line.

    `message` is what the detectors read (the content after the header); `timestamp` is UTC
    when the format says so, naive-as-UTC otherwise; `label` is the inline ground-truth label
    when the format carries one (BGL), else None.
    """

    line_no: int
    timestamp: datetime | None
    message: str
    raw: str
    label: int | None = None


_HDFS_LINE = re.compile(
    r"^(?P<date>\d{6}) (?P<time>\d{6}) (?P<pid>\d+) (?P<level>\w+) (?P<component>\S+?): ?(?P<content>.*)$"
)
_BGL_LINE = re.compile(
    r"^(?P<label>\S+) (?P<epoch>\d+) (?P<date>\S+) (?P<node>\S+) (?P<time>\S+) (?P<noderepeat>\S+) "
    r"(?P<type>\S+) (?P<component>\S+) (?P<level>\S+) ?(?P<content>.*)$"
)
HDFS_BLOCK_ID = re.compile(r"blk_-?\d+")

LineFormat = Literal["hdfs", "bgl", "raw"]


def parse_line(raw: str, line_no: int, fmt: LineFormat) -> LogLine | None:
    """Parse one raw line in format `fmt`; None when it does not match the format.

    - hdfs: ``yymmdd HHMMSS pid LEVEL component: content`` (timestamp read as UTC; HDFS has no
      time zone).
    - bgl: LogHub BGL; the leading label field (``-`` = normal) becomes `label` and is *not*
      part of the message, since it would leak the answer. Timestamp from the epoch field.
    - raw: the whole line is the message, no timestamp.
    Trailing CR/LF is stripped first (the LogHub ``*_2k`` files use CRLF).
    """
    line = raw.rstrip("\r\n")
    if fmt == "raw":
        return LogLine(line_no, None, line, line)
    if fmt == "hdfs":
        m = _HDFS_LINE.match(line)
        if m is None:
            return None
        ts = datetime.strptime(m["date"] + m["time"], "%y%m%d%H%M%S").replace(tzinfo=UTC)
        return LogLine(line_no, ts, m["content"], line)
    m = _BGL_LINE.match(line)
    if m is None:
        return None
    ts = datetime.fromtimestamp(int(m["epoch"]), tz=UTC)
    return LogLine(line_no, ts, m["content"], line, label=0 if m["label"] == "-" else 1)


def iter_log_lines(lines: Iterable[str], fmt: LineFormat) -> Iterator[LogLine | tuple[int, str]]:
    """Parse lines; yields a `LogLine` per parsed line and ``(line_no, raw)`` for a line that
    does not match `fmt`, so callers decide how to report it (never silently dropped)."""
    for line_no, raw in enumerate(lines, start=1):
        parsed = parse_line(raw, line_no, fmt)
        yield parsed if parsed is not None else (line_no, raw.rstrip("\r\n"))


# --------------------------------------------------------------------------------------------
# Sequences
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LogSequence:
    """An ordered group of log lines that a detector scores as one unit."""

    key: str
    lines: tuple[LogLine, ...]

    @property
    def messages(self) -> list[str]:
        return [line.message for line in self.lines]


def session_keys(message: str, key_pattern: re.Pattern[str]) -> list[str]:
    """Distinct matches of `key_pattern` in `message`, in order of appearance.

    For HDFS (`HDFS_BLOCK_ID`) a line naming several blocks belongs to each of them.
    """
    return list(dict.fromkeys(key_pattern.findall(message)))


def sessions_by_key(
    lines: Iterable[LogLine], key_pattern: re.Pattern[str]
) -> tuple[list[LogSequence], list[LogLine]]:
    """Group lines into sessions keyed by `key_pattern`, in order of each key's first line.

    Returns the sessions and the lines that carry no key (reported, not dropped, by callers).
    """
    groups: dict[str, list[LogLine]] = {}
    keyless: list[LogLine] = []
    for line in lines:
        keys = session_keys(line.message, key_pattern)
        if not keys:
            keyless.append(line)
        for key in keys:
            groups.setdefault(key, []).append(line)
    return [LogSequence(k, tuple(v)) for k, v in groups.items()], keyless


def fixed_windows(lines: Sequence[LogLine], size: int, key_prefix: str = "window") -> list[LogSequence]:
    """Non-overlapping windows of `size` consecutive lines; the tail window is kept.

    Raises:
        ValueError: `size` < 1.
    """
    if size < 1:
        raise ValueError(f"window size must be >= 1, got {size}")
    return [
        LogSequence(f"{key_prefix}-{start // size}", tuple(lines[start : start + size]))
        for start in range(0, len(lines), size)
    ]


def build_sequences(
    lines: Iterable[LogLine],
    *,
    session_pattern: str | None = None,
    window_size: int | None = None,
) -> tuple[list[LogSequence], list[LogLine]]:
    """Build sequences by session key regex or by fixed windows (exactly one must be given).

    Returns the sequences and the lines that could not be placed in any (keyless lines).

    Raises:
        ValueError: both or neither of `session_pattern` and `window_size` given, or the
            pattern does not compile.
    """
    if (session_pattern is None) == (window_size is None):
        raise ValueError("give exactly one of session_pattern or window_size")
    if session_pattern is not None:
        try:
            pattern = re.compile(session_pattern)
        except re.error as exc:
            raise ValueError(f"session pattern {session_pattern!r} does not compile: {exc}") from exc
        return sessions_by_key(lines, pattern)
    assert window_size is not None
    return fixed_windows(list(lines), window_size), []

