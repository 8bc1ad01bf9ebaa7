"""systemd's notify protocol (sd_notify), spoken by `logllm run` itself: no libsystemd needed.

    NOTIFY_SOCKET=/run/systemd/notify or @abstract-name -> one AF_UNIX datagram per message,
    "KEY=value" lines:  READY=1 + STATUS=...  once set up
                        STATUS=...             after every pass (one line: role, counts, lag)
                        WATCHDOG=1             every half of WATCHDOG_USEC, while the worker is live
                        STOPPING=1 + STATUS=   when a stop is requested

Outside systemd (NOTIFY_SOCKET unset) `SystemdNotifier` sends nothing and starts no thread.

Watchdog design. The pings come from a thread of their own, at half of WATCHDOG_USEC, so they do
not depend on how long a pass or a detector batch takes. What they do depend on is liveness:
the service calls `heartbeat()` only while it waits for its next pass or while the running pass
makes progress (see `enricher.service.Service`: its worker counters move with every page read
and every batch scored or written). A ping is sent only if the last heartbeat is younger than
the watchdog timeout itself. So a worker wedged inside a pass (a deadlock, a hung call) stops
pinging WatchdogSec after its last progress, and systemd kills and restarts it at most one
WatchdogSec later; a healthy worker scoring a long batch keeps pinging as long as one batch takes
less than WatchdogSec. One knob (WatchdogSec) therefore bounds both a frozen process and a stuck
pass, which is why the shipped unit sets it to minutes, not seconds.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

from enricher.pipeline import PassSummary

log = logging.getLogger(__name__)

ENV_SOCKET = "NOTIFY_SOCKET"
ENV_WATCHDOG_USEC = "WATCHDOG_USEC"
ENV_WATCHDOG_PID = "WATCHDOG_PID"

Fields = Mapping[str, str]


# ---------------------------------------------------------------------------------------------
# The protocol: pure functions.


def notify_address(value: str) -> str | bytes:
    """The `sendto` address for a NOTIFY_SOCKET value: a filesystem path as is, or "@name" as
    the abstract-namespace address b"\\0name".

    Raises:
        ValueError: anything else (e.g. systemd 253's "vsock:" addresses, which this does not speak).
    """
    if value.startswith("@") and len(value) > 1:
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    raise ValueError(f"{ENV_SOCKET}={value!r} is neither an absolute socket path nor an @abstract name")


def watchdog_timeout_s(environ: Mapping[str, str], pid: int) -> float | None:
    """The watchdog timeout systemd expects pings within, or None when there is none for `pid`.

    WATCHDOG_USEC is set when the unit has WatchdogSec=; WATCHDOG_PID, when set, names the process
    the watchdog is meant for (a child that inherited the variables must not ping for its parent).
    """
    usec = environ.get(ENV_WATCHDOG_USEC, "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    owner = environ.get(ENV_WATCHDOG_PID, "")
    if owner and (not owner.isdigit() or int(owner) != pid):
        return None
    return int(usec) / 1_000_000


def encode(fields: Fields) -> bytes:
    """One notify datagram: "KEY=value" lines. Values are made single-line (systemd splits on
    newlines, so a newline inside STATUS would start a bogus assignment)."""
    return "".join(f"{key}={' '.join(value.splitlines())}\n" for key, value in fields.items()).encode()


def should_ping(now: float, last_heartbeat: float, timeout_s: float) -> bool:
    """Ping the watchdog only while the last sign of progress is younger than its timeout."""
    return now - last_heartbeat < timeout_s


@dataclass
class PassTally:
    """What the STATUS line reports beyond the last pass: totals since start, failures in a row."""

    passes: int = 0
    docs_labelled: int = 0
    anomalous_groups: int = 0
    failed_in_a_row: int = 0

    def record(self, role: str, summary: PassSummary | None) -> None:
        self.passes += 1
        if role == "failed":
            self.failed_in_a_row += 1
            return
        self.failed_in_a_row = 0
        if summary is not None:
            self.docs_labelled += summary.docs_labelled
            self.anomalous_groups += summary.anomalous_groups


def lag_s(summary: PassSummary) -> float | None:
    """Seconds from the read position to the newest source document (as `logllm_lag_seconds`),
    or None when either is unknown."""
    if summary.newest_document is None or not summary.read_position:
        return None
    read_ms = summary.read_position[0]
    if not isinstance(read_ms, int | float):
        return None
    newest_ms = datetime.fromisoformat(summary.newest_document).timestamp() * 1000
    return max(0.0, (newest_ms - read_ms) / 1000)


def status_line(role: str, summary: PassSummary | None, tally: PassTally) -> str:
    """The one-line STATUS shown by `systemctl status` after a pass."""
    totals = (
        f"since start: {tally.passes} passes, {tally.docs_labelled} docs labelled, {tally.anomalous_groups} anomalous"
    )
    if role == "standby":
        return f"standby: another worker holds the lease; {totals}"
    if role == "failed" or summary is None:
        return f"last pass failed ({tally.failed_in_a_row} in a row, see the journal); {totals}"
    lag = lag_s(summary)
    return (
        f"active: last pass read {summary.docs_read} docs, scored {summary.groups_scored} groups "
        f"({summary.anomalous_groups} anomalous) in {summary.seconds:.1f}s"
        + (f", lag {lag:.0f}s" if lag is not None else "")
        + f"; {totals}"
    )


# ---------------------------------------------------------------------------------------------
# I/O: the socket and the service hooks.


class NotifySocket:
    """Sends notify datagrams to one address. Never raises: a lost notification must not stop
    the worker (systemd then acts on its timeouts); the first failure is logged."""

    def __init__(self, address: str | bytes) -> None:
        self.address = address
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.setblocking(False)  # a full receive queue must not stall a pass
        self._warned = False

    def send(self, fields: Fields) -> None:
        try:
            self._socket.sendto(encode(fields), self.address)
        except OSError as error:
            if not self._warned:
                self._warned = True
                log.warning("could not notify systemd at %r: %s (further failures are not logged)", self.address, error)

    def close(self) -> None:
        self._socket.close()


class SystemdNotifier:
    """`ServiceHooks` that report to systemd; see the module docstring for the watchdog rule.

    `send` receives each message's fields (None: not under systemd, every call is a no-op);
    `watchdog_s` is the watchdog timeout (None: no WatchdogSec=, no pings).
    """

    def __init__(
        self,
        send: Callable[[Fields], None] | None,
        watchdog_s: float | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._send = send
        self.watchdog_s = watchdog_s if send is not None else None
        self._clock = clock
        self._last_heartbeat = clock()
        self._tally = PassTally()
        self._stop = threading.Event()
        # Held from the stop check to the ping, so no WATCHDOG=1 can follow STOPPING=1.
        self._ping_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._withholding = False

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> SystemdNotifier:
        """A notifier for the sockets systemd named in the environment (a no-op one outside systemd)."""
        env = os.environ if environ is None else environ
        value = env.get(ENV_SOCKET)
        if not value:
            return cls(None, None)
        try:
            address = notify_address(value)
        except ValueError as error:
            log.warning("not notifying systemd: %s", error)
            return cls(None, None)
        return cls(NotifySocket(address).send, watchdog_timeout_s(env, os.getpid()))

    @property
    def enabled(self) -> bool:
        return self._send is not None

    # -- ServiceHooks --------------------------------------------------------------------------

    def ready(self) -> None:
        self._last_heartbeat = self._clock()
        self._notify({"READY": "1", "STATUS": "started; first pass running"})
        if self.watchdog_s is not None and self._thread is None:
            self._thread = threading.Thread(target=self._watchdog, name="systemd-watchdog", daemon=True)
            self._thread.start()

    def pass_done(self, role: str, summary: PassSummary | None) -> None:
        self._last_heartbeat = self._clock()
        self._tally.record(role, summary)
        self._notify({"STATUS": status_line(role, summary, self._tally)})

    def heartbeat(self) -> None:
        self._last_heartbeat = self._clock()

    def stopping(self) -> None:
        # From here on TimeoutStopSec= applies, not the watchdog: the pings can end.
        with self._ping_lock:
            self._stop.set()
        self._notify({"STOPPING": "1", "STATUS": "stopping: finishing the batch in flight"})

    # -- internals -----------------------------------------------------------------------------

    def _notify(self, fields: Fields) -> None:
        if self._send is not None:
            self._send(fields)

    def _watchdog(self) -> None:
        assert self.watchdog_s is not None
        while not self._stop.wait(self.watchdog_s / 2):
            now = self._clock()
            if should_ping(now, self._last_heartbeat, self.watchdog_s):
                self._withholding = False
                with self._ping_lock:
                    if self._stop.is_set():
                        return
                    self._notify({"WATCHDOG": "1"})
            elif not self._withholding:
                self._withholding = True
                log.error(
                    "no progress for %.0fs (WatchdogSec=%.0fs): withholding watchdog pings so systemd restarts the "
                    "worker; if one batch legitimately takes this long, raise WatchdogSec or lower "
                    "LOGLLM_SCORING__BATCH_GROUPS",
                    now - self._last_heartbeat,
                    self.watchdog_s,
                )
