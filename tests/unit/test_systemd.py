"""systemd: the notify protocol on real datagram sockets, the watchdog's liveness rule against
the service on memory twins, the unit checked by systemd's own tools, and the installer."""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import shlex
import shutil
import socket
import stat
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from enricher.cli import main
from enricher.pipeline import PassSummary
from enricher.service import Service, ServiceOptions
from enricher.settings import GroupingSettings, Settings, load_settings
from enricher.systemd.install import (
    GPU_DROPIN_NAME,
    UNIT_NAME,
    Host,
    InstallOptions,
    env_quote,
    execute_commands,
    install,
    plan_install,
    protect_home_for,
    render_env_file,
    render_unit,
)
from enricher.systemd.notify import (
    NotifySocket,
    PassTally,
    SystemdNotifier,
    encode,
    notify_address,
    should_ping,
    status_line,
    watchdog_timeout_s,
)
from model.errors import UserError
from tests.fakes import FakeDetector, MemoryCluster, memory_world

# The exposure `systemd-analyze security` may rate the unit at, with and without the GPU drop-in
# and with ProtectHome=read-only (stated in the unit's header and the README). Measured: 1.2-1.3.
EXPOSURE_THRESHOLD = 2.0
# --threshold= counts in tenths of the displayed level (0-100).
THRESHOLD_ARG = f"--threshold={round(EXPOSURE_THRESHOLD * 10)}"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
# systemd's own parser of environment files (same code as EnvironmentFile=), as a program.
ENV_GENERATOR = Path("/usr/lib/systemd/user-environment-generators/30-systemd-environment-d-generator")


# ---------------------------------------------------------------------------------------------
# A notify socket like systemd's, bound by the test.


class NotifyListener:
    """Binds an AF_UNIX datagram socket (a path, or an abstract '@' name) and collects what
    arrives, with the arrival time, from a thread."""

    def __init__(self, address: str) -> None:
        self.address = address  # as NOTIFY_SOCKET spells it
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.bind(b"\0" + address[1:].encode() if address.startswith("@") else address)
        self._socket.settimeout(0.1)
        self.messages: list[tuple[float, dict[str, str]]] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._closed.is_set():
            try:
                data = self._socket.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines())
            with self._lock:
                self.messages.append((time.monotonic(), fields))

    def with_key(self, key: str) -> list[tuple[float, dict[str, str]]]:
        with self._lock:
            return [(at, fields) for at, fields in self.messages if key in fields]

    def wait_for(self, key: str, count: int = 1, timeout_s: float = 60) -> list[tuple[float, dict[str, str]]]:
        """The first `count` messages holding `key`; fails after `timeout_s` (a hang bound)."""
        deadline = time.monotonic() + timeout_s
        while len(self.with_key(key)) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"no {count} {key} messages within {timeout_s}s; got {self.messages}")
            time.sleep(0.02)
        return self.with_key(key)[:count]

    def close(self) -> None:
        self._closed.set()
        self._thread.join()
        self._socket.close()

    @classmethod
    def bind(cls, kind: str, folder: Path) -> NotifyListener:
        """A listener on a socket file in `folder` (kind "path") or an abstract name ("abstract")."""
        return cls(str(folder / "notify.sock") if kind == "path" else f"@logllm-test-{uuid.uuid4().hex}")


@pytest.fixture(params=["path", "abstract"])
def listener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[NotifyListener]:
    bound = NotifyListener.bind(request.param, tmp_path)
    yield bound
    bound.close()


# ---------------------------------------------------------------------------------------------
# The protocol's pure parts.


@pytest.mark.parametrize(
    ("value", "address"),
    [("/run/systemd/notify", "/run/systemd/notify"), ("@sd-notify", b"\0sd-notify")],
)
def test_notify_socket_paths_and_abstract_names_become_sendto_addresses(value: str, address: str | bytes) -> None:
    assert notify_address(value) == address


@pytest.mark.parametrize("value", ["relative/path", "@", "vsock:2:1234"])
def test_notify_socket_values_that_are_no_unix_address_are_refused(value: str) -> None:
    with pytest.raises(ValueError, match="NOTIFY_SOCKET"):
        notify_address(value)


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "junk"}, None),
        ({"WATCHDOG_USEC": "30000000"}, 30.0),
        ({"WATCHDOG_USEC": "500000", "WATCHDOG_PID": "4242"}, 0.5),
        ({"WATCHDOG_USEC": "500000", "WATCHDOG_PID": "1"}, None),  # meant for another process
    ],
)
def test_the_watchdog_timeout_comes_from_watchdog_usec_for_this_process_only(
    environ: dict[str, str], expected: float | None
) -> None:
    assert watchdog_timeout_s(environ, pid=4242) == expected


def test_a_message_is_key_value_lines_and_a_multi_line_status_stays_one_line() -> None:
    assert encode({"READY": "1", "STATUS": "a\nb"}) == b"READY=1\nSTATUS=a b\n"


@pytest.mark.parametrize(
    ("now", "last", "timeout", "ping"),
    [(100.0, 99.0, 10.0, True), (100.0, 90.5, 10.0, True), (100.0, 90.0, 10.0, False), (100.0, 0.0, 10.0, False)],
)
def test_pings_go_out_only_while_the_last_progress_is_younger_than_the_timeout(
    now: float, last: float, timeout: float, ping: bool
) -> None:
    assert should_ping(now, last, timeout) is ping


def test_status_lines_summarise_the_pass_the_role_and_the_totals() -> None:
    tally = PassTally()
    summary = PassSummary(
        "live:logs",
        docs_read=1200,
        groups_scored=40,
        anomalous_groups=3,
        docs_labelled=1100,
        read_position=[1_700_000_000_000, "id"],
        newest_document="2023-11-14T22:13:32.000+00:00",  # 12 s after the read position
        seconds=4.04,
    )
    tally.record("active", summary)
    assert status_line("active", summary, tally) == (
        "active: last pass read 1200 docs, scored 40 groups (3 anomalous) in 4.0s, lag 12s; "
        "since start: 1 passes, 1100 docs labelled, 3 anomalous"
    )
    tally.record("standby", None)
    assert status_line("standby", None, tally).startswith("standby: another worker holds the lease; since start: 2")
    tally.record("failed", None)
    tally.record("failed", None)
    assert status_line("failed", None, tally).startswith("last pass failed (2 in a row")
    assert "\n" not in status_line("active", summary, tally)


# ---------------------------------------------------------------------------------------------
# The notifier on a real socket.


def test_outside_systemd_the_notifier_sends_nothing_and_starts_no_thread() -> None:
    notifier = SystemdNotifier.from_environ({"WATCHDOG_USEC": "1000"})
    before = threading.active_count()
    notifier.ready()
    notifier.pass_done("standby", None)
    notifier.stopping()
    assert not notifier.enabled and notifier.watchdog_s is None and threading.active_count() == before


def test_a_notifier_reports_ready_status_and_stopping_to_the_socket(listener: NotifyListener) -> None:
    notifier = SystemdNotifier.from_environ({"NOTIFY_SOCKET": listener.address})
    notifier.ready()
    notifier.pass_done("standby", None)
    notifier.stopping()
    (_, ready), (_, standby), (_, stopping) = listener.wait_for("STATUS", 3)
    assert ready["READY"] == "1"
    assert standby["STATUS"].startswith("standby:")
    assert stopping["STOPPING"] == "1"
    assert not listener.with_key("WATCHDOG")  # no WatchdogSec=, no pings


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_watchdog_pings_come_at_half_the_timeout_and_stop_when_progress_stops(
    listener: NotifyListener, caplog: pytest.LogCaptureFixture
) -> None:
    clock = ManualClock()
    timeout_s = 0.4
    # Staleness is judged on the manual clock; the ping period stays real time.
    notifier = SystemdNotifier(NotifySocket(notify_address(listener.address)).send, timeout_s, clock=clock)
    notifier.ready()
    pings = listener.wait_for("WATCHDOG", 5)
    gaps = [later - earlier for (earlier, _), (later, _) in zip(pings, pings[1:], strict=False)]
    assert all(0.5 * timeout_s / 2 < gap < 3 * timeout_s / 2 for gap in gaps), gaps  # generous: a busy CI box
    with caplog.at_level(logging.ERROR, logger="enricher.systemd.notify"):
        clock.now += 2 * timeout_s  # no heartbeat for longer than the timeout: the worker looks stuck
        time.sleep(timeout_s / 2)  # a ping already on its way may still arrive
        count = len(listener.with_key("WATCHDOG"))
        time.sleep(3 * timeout_s)
        assert len(listener.with_key("WATCHDOG")) == count
    assert "withholding watchdog pings" in caplog.text
    notifier.heartbeat()  # progress again: pings resume
    listener.wait_for("WATCHDOG", count + 2)
    notifier.stopping()


# ---------------------------------------------------------------------------------------------
# The service's heartbeats: only while idle or progressing (what the watchdog relies on).


class BlockingDetector(FakeDetector):
    """Blocks inside `score` until released: a wedged batch."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def score(self, sequences: Any, progress: Any = None) -> Any:
        self.entered.set()
        assert self.release.wait(60), "the test never released the detector"
        return super().score(sequences, progress)


def test_a_pass_stuck_in_a_batch_stops_the_heartbeats_and_the_watchdog_pings(
    listener: NotifyListener, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Service, "HEARTBEAT_S", 0.05)
    cluster = MemoryCluster()
    for n in range(30):
        cluster.add("logs", f"{n:03d}", 1_000_000 + n * 1000, message=f"event {n % 3} for blk_{n % 10}")
    detector = BlockingDetector()
    world = memory_world(
        cluster, GroupingSettings(mode="session", inactivity_gap_s=5, max_length=10), clock=time.time, detector=detector
    )
    notifier = SystemdNotifier.from_environ({"NOTIFY_SOCKET": listener.address, "WATCHDOG_USEC": "600000"})
    service = Service(
        world.worker,
        world.lease,
        world.metrics,
        ServiceOptions(0.05, 30, 3, None, "127.0.0.1"),
        notifier,
        install_signals=False,
    )
    runner = threading.Thread(target=service.run, daemon=True)
    runner.start()
    try:
        listener.wait_for("READY")
        assert detector.entered.wait(30)
        time.sleep(0.6 + 0.3)  # a whole timeout without progress, plus one ping period
        pinged = len(listener.with_key("WATCHDOG"))
        time.sleep(2 * 0.6)
        assert len(listener.with_key("WATCHDOG")) == pinged, "pings went on while the batch was stuck"
        detector.release.set()  # the batch completes: progress, then idle waiting between passes
        (_, status), *_ = listener.wait_for("STATUS", 2)[1:]
        assert status["STATUS"].startswith("active: last pass read 30 docs")
        resumed = len(listener.with_key("WATCHDOG"))
        listener.wait_for("WATCHDOG", resumed + 3)
    finally:
        detector.release.set()
        service.stop()
        runner.join(30)
    assert not runner.is_alive()
    # The datagram is sent before stop() returns, but the listener's thread may not have read it yet.
    listener.wait_for("STOPPING")


# ---------------------------------------------------------------------------------------------
# The unit, checked by systemd's tools.


def this_host(**changes: Any) -> Host:
    return dataclasses.replace(Host.probe("logllm-test-user-that-does-not-exist", Path("/")), **changes)


def rendered_unit(tmp_path: Path, gpu: bool = False, protect_home: str | None = None) -> Path:
    """The unit as `install` writes it for this environment, in a unit folder under tmp_path."""
    host = this_host()
    plan = plan_install(InstallOptions(gpu=gpu, root=tmp_path), host)
    unit_dir = tmp_path / "etc" / "systemd" / "system"
    for planned in plan.files:
        if planned.path.suffix in (".service", ".conf"):
            target = tmp_path / planned.path.relative_to("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            content = planned.content
            if protect_home is not None:
                content = content.replace("ProtectHome=yes", f"ProtectHome={protect_home}")
            target.write_text(content)
    return unit_dir / UNIT_NAME


def analyze(*args: str, unit_dir: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Runs systemd-analyze; with `unit_dir`, units and their drop-ins are looked up there first."""
    if SYSTEMD_ANALYZE is None:
        pytest.skip("systemd-analyze is not installed (Debian/Ubuntu: apt install systemd)")
    # A trailing ':' keeps the default search path after ours (verify needs its targets).
    env = {**os.environ, "SYSTEMD_UNIT_PATH": f"{unit_dir}:"} if unit_dir else None
    return subprocess.run([SYSTEMD_ANALYZE, *args], capture_output=True, text=True, timeout=120, env=env)


def verify(unit: Path) -> subprocess.CompletedProcess[str]:
    return analyze("verify", "--man=no", str(unit), unit_dir=unit.parent)


def test_the_rendered_unit_and_gpu_drop_in_pass_systemd_analyze_verify_without_a_word(tmp_path: Path) -> None:
    unit = rendered_unit(tmp_path, gpu=True)
    text = unit.read_text()
    assert not re.search(r"@[A-Z_]+@", text)
    assert f"ExecStart={this_host().exec_start} run\n" in text
    verified = verify(unit)
    assert (verified.returncode, verified.stdout, verified.stderr) == (0, "", "")


def test_systemd_analyze_verify_does_catch_a_broken_unit_and_drop_in(tmp_path: Path) -> None:
    """The verify test above can fail: the same check on a unit with a typo and a missing
    binary, and a drop-in with an unknown key (which shows that drop-ins are read)."""
    unit = rendered_unit(tmp_path, gpu=True)
    unit.write_text(unit.read_text().replace("NoNewPrivileges=", "NoNewPrivilege=").replace(
        str(this_host().exec_start), "/nonexistent/logllm"
    ))  # fmt: skip
    dropin = unit.parent / f"{UNIT_NAME}.d" / GPU_DROPIN_NAME
    dropin.write_text(dropin.read_text() + "DeviceAlow=char-nvidia* rw\n")
    verified = verify(unit)
    assert verified.returncode != 0
    for complaint in ("NoNewPrivilege", "/nonexistent/logllm", "DeviceAlow"):
        assert complaint in verified.stderr, verified.stderr


def exposure(result: subprocess.CompletedProcess[str]) -> float:
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert found, result.stdout + result.stderr
    return float(found.group(1))


@pytest.mark.parametrize(("gpu", "protect_home"), [(False, None), (False, "read-only"), (True, None)])
def test_systemd_analyze_security_rates_the_unit_within_the_stated_exposure(
    tmp_path: Path, gpu: bool, protect_home: str | None
) -> None:
    rendered_unit(tmp_path, gpu=gpu, protect_home=protect_home)
    result = analyze("security", "--offline=true", f"--root={tmp_path}", THRESHOLD_ARG, "--no-pager", UNIT_NAME)
    score = exposure(result)
    assert result.returncode == 0 and score <= EXPOSURE_THRESHOLD, result.stdout
    # With the drop-in read, the device sandbox is the one item that changes.
    assert bool(re.search(r"✗ PrivateDevices=", result.stdout)) is gpu


def test_systemd_analyze_security_threshold_rejects_an_unhardened_unit(tmp_path: Path) -> None:
    unit = tmp_path / "etc" / "systemd" / "system" / "bare.service"
    unit.parent.mkdir(parents=True)
    unit.write_text(f"[Service]\nExecStart={this_host().exec_start} run\n")
    result = analyze(
        "security",
        "--offline=true",
        f"--root={tmp_path}",
        THRESHOLD_ARG,
        "--no-pager",
        "bare.service",
    )
    assert result.returncode != 0 and exposure(result) > EXPOSURE_THRESHOLD


def test_the_unit_asks_for_what_the_brief_and_the_watchdog_need(tmp_path: Path) -> None:
    text = rendered_unit(tmp_path).read_text()
    for line in (
        "Type=notify",
        "NotifyAccess=main",
        "WatchdogSec=15min",
        "Restart=on-failure",
        "RestartPreventExitStatus=2",
        "User=logllm",
        "EnvironmentFile=-/etc/logllm/enricher.env",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "SystemCallFilter=@system-service",
        "CapabilityBoundingSet=",
    ):
        assert f"\n{line}\n" in text, line
    assert "\nMemoryDenyWriteExecute=yes" not in text  # oneDNN's run-time code generation needs it off


@pytest.mark.parametrize(
    ("paths", "expected"),
    [
        (["/opt/logllm/.venv/bin/logllm", "/opt/logllm/src/enricher"], "yes"),
        (["/srv/x", "/home/ann/logllm/model/shipped"], "read-only"),
        (["/root/.venv/bin/logllm"], "read-only"),
        (["/homework/logllm"], "yes"),
    ],
)
def test_code_under_a_home_directory_makes_home_read_only_instead_of_hidden(paths: list[str], expected: str) -> None:
    assert protect_home_for([PurePosixPath(p) for p in paths]) == expected


@pytest.mark.parametrize(
    ("exec_start", "user", "message"),
    [
        ("relative/logllm", "logllm", "must be an absolute path"),
        ("/opt/my venv/bin/logllm", "logllm", "contains spaces"),
        ("/opt/venv/bin/logllm", "Bad User", "not a valid system user name"),
    ],
)
def test_unit_rendering_refuses_paths_and_users_a_unit_cannot_hold(exec_start: str, user: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        render_unit(PurePosixPath(exec_start), PurePosixPath("/etc/logllm/enricher.env"), user, "yes")


# ---------------------------------------------------------------------------------------------
# The settings file.


@pytest.mark.parametrize(
    ("value", "quoted"),
    [("logs-*", "logs-*"), ("http://a:9200,http://b:9200", "http://a:9200,http://b:9200"), (r"blk_-?\d+", r'"blk_-?\\d+"'),
     ('a "b" $c `d`', r'"a \"b\" \$c \`d\`"')],
)  # fmt: skip
def test_env_values_are_quoted_the_way_systemd_reads_them_back(value: str, quoted: str) -> None:
    assert env_quote(value) == quoted


def test_the_settings_file_read_by_systemds_parser_gives_the_default_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Uncomment every line, let systemd's own env-file parser read it, load the settings from
    the result: they must equal the defaults, and every setting must be in the file."""
    if not ENV_GENERATOR.is_file():
        pytest.skip(f"{ENV_GENERATOR} (systemd's environment.d parser) is not installed")
    text = render_env_file()
    assignments = [line[1:] for line in text.splitlines() if line.startswith("#LOGLLM_")]
    expected = {
        f"LOGLLM_{section.upper()}__{name.upper()}"
        for section, info in Settings.model_fields.items()
        for name in info.annotation.model_fields  # type: ignore[union-attr]
    }
    assert {line.split("=", 1)[0] for line in assignments} == expected
    folder = tmp_path / "environment.d"
    folder.mkdir()
    (folder / "50-logllm.conf").write_text("\n".join(line for line in assignments if not line.endswith("=")) + "\n")
    parsed = subprocess.run(
        [str(ENV_GENERATOR)], env={"XDG_CONFIG_HOME": str(tmp_path)}, capture_output=True, text=True, check=True
    ).stdout
    values = dict(shlex.split(line)[0].split("=", 1) for line in parsed.splitlines() if line.startswith("LOGLLM_"))
    for key in list(os.environ):
        if key.startswith("LOGLLM_"):
            monkeypatch.delenv(key)
    defaults = load_settings()
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    assert load_settings() == defaults


# ---------------------------------------------------------------------------------------------
# The installer.


class Recorder:
    def __init__(self, codes: dict[str, int] | None = None) -> None:
        self.commands: list[list[str]] = []
        self.codes = codes or {}

    def __call__(self, command: list[str]) -> int:
        self.commands.append(command)
        return self.codes.get(command[1] if command[0] == "systemctl" else command[0], 0)


def run_install(tmp_path: Path, host: Host, *, euid: int = 0, runner: Callable[[list[str]], int] | None = None,
                **options: Any) -> tuple[list[str], Any]:  # fmt: skip
    out: list[str] = []
    plan = install(InstallOptions(root=tmp_path, **options), host, euid=euid, run=runner or Recorder(), out=out.append)
    return out, plan


def test_a_dry_run_writes_the_files_under_the_root_and_only_prints_the_commands(tmp_path: Path) -> None:
    runner = Recorder()
    out, _ = run_install(tmp_path, this_host(systemd_running=True), euid=1000, runner=runner, dry_run=True, gpu=True)
    unit = tmp_path / "etc/systemd/system" / UNIT_NAME
    env_file = tmp_path / "etc/logllm/enricher.env"
    dropin = tmp_path / "etc/systemd/system" / f"{UNIT_NAME}.d" / GPU_DROPIN_NAME
    assert stat.S_IMODE(unit.stat().st_mode) == 0o644 and "Type=notify" in unit.read_text()
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o640 and stat.S_IMODE(env_file.parent.stat().st_mode) == 0o750
    assert "DeviceAllow=char-nvidia* rw" in dropin.read_text()
    assert runner.commands == []
    printed = "\n".join(out)
    assert "useradd --system --user-group" in printed and printed.count("useradd") == 1
    assert "systemctl daemon-reload" in printed and f"systemctl enable --now {UNIT_NAME}" in printed


def test_an_existing_settings_file_is_kept_and_the_unit_is_renewed(tmp_path: Path) -> None:
    env_file = tmp_path / "etc/logllm/enricher.env"
    env_file.parent.mkdir(parents=True)
    env_file.write_text("LOGLLM_SOURCE__INDEX=mine-*\n")
    unit = tmp_path / "etc/systemd/system" / UNIT_NAME
    unit.parent.mkdir(parents=True)
    unit.write_text("stale")
    out, _ = run_install(tmp_path, this_host(), dry_run=True)
    assert env_file.read_text() == "LOGLLM_SOURCE__INDEX=mine-*\n" and "Type=notify" in unit.read_text()
    assert any(line.startswith("kept") and str(env_file) in line for line in out)


def test_installing_for_real_needs_root_and_writes_nothing_without_it(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"run it as root .* or add --dry-run"):
        run_install(tmp_path, this_host(), euid=1000)
    assert list(tmp_path.iterdir()) == []


def test_as_root_under_systemd_the_commands_run_in_order_and_a_failure_stops_them() -> None:
    host = this_host(systemd_running=True, user_exists=False)
    plan = plan_install(InstallOptions(), host)  # root /: the plan only; no file is written here
    assert plan.deferred == []
    runner, out = Recorder(), list[str]()
    execute_commands(plan, runner, out.append)
    assert [c[:2] for c in runner.commands] == [["useradd", "--system"], ["systemctl", "daemon-reload"],
                                               ["systemctl", "enable"]]  # fmt: skip
    assert runner.commands[0][-1] == "logllm" and out[0].startswith("running  useradd")
    failing = Recorder({"daemon-reload": 1})
    with pytest.raises(UserError, match="`systemctl daemon-reload` failed with exit code 1"):
        execute_commands(plan, failing, out.append)
    assert [c[:2] for c in failing.commands] == [["useradd", "--system"], ["systemctl", "daemon-reload"]]


def test_without_systemd_as_pid_1_the_user_is_created_and_systemctl_is_left_to_the_operator() -> None:
    plan = plan_install(InstallOptions(), this_host(systemd_running=False, user_exists=False))
    assert [c[0] for c in plan.commands] == ["useradd"]
    assert [c[:2] for c in plan.deferred] == [["systemctl", "daemon-reload"], ["systemctl", "enable"]]
    assert any("not running as PID 1" in note for note in plan.notes)
    runner, out = Recorder(), list[str]()
    execute_commands(plan, runner, out.append)
    assert len(runner.commands) == 1 and out[1:] == [
        "commands to run:",
        "  systemctl daemon-reload",
        f"  systemctl enable --now {UNIT_NAME}",
        f"note: {plan.notes[0]}",
    ]


def test_no_enable_stops_at_daemon_reload() -> None:
    plan = plan_install(InstallOptions(enable=False), this_host(user_exists=True, systemd_running=True))
    assert (plan.commands, plan.deferred) == ([["systemctl", "daemon-reload"]], [])


def test_the_cli_installs_into_a_root_with_dry_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["systemd", "install", "--dry-run", "--root", str(tmp_path), "--no-enable"]) == 0
    assert (tmp_path / "etc/systemd/system" / UNIT_NAME).is_file()
    assert "commands (not run: --dry-run):" in capsys.readouterr().out
