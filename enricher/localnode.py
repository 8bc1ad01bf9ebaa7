"""A local single-node OpenSearch for development, integration tests, the demo and benchmarks.

    install: mvn fetches the integ-test zip -> unpack to <home>/opensearch-<version> -> write config
    start:   healthy node on the port? done. Else install -> bin/opensearch -d -> wait for yellow
    stop:    SIGTERM the pid in <home>/run/opensearch.pid -> wait -> SIGKILL

The node listens on 127.0.0.1 only, forms a single-node cluster, has a fixed 1 GiB heap and no
disk watermarks (development disks are often nearly full, and the default watermarks would then
block every write). OpenSearch refuses to run as root, so under root the node runs as the system
user `logllm-os`, created on first use.

Settings come from the `LocalNode` arguments, else from the environment (LOGLLM_NODE_HOME,
LOGLLM_NODE_PORT, LOGLLM_NODE_VERSION), else from the defaults below. The module functions
(config rendering, command building, response parsing) do no I/O, so unit tests cover them
without a node; `LocalNode` does the I/O. Commands: `logllm node install|start|stop|status`, and
the same as `python -m enricher.localnode ...` (what the Makefile runs).
"""

from __future__ import annotations

import argparse
import fcntl
import http.client
import json
import logging
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from model.errors import UserError

logger = logging.getLogger(__name__)

DEFAULT_VERSION = "2.19.5"  # newest 2.19.x on Maven Central when this was written
DEFAULT_PORT = 9200
DEFAULT_HEAP = "1g"
DEFAULT_START_TIMEOUT_S = 120.0  # startup takes 15-30 s on a 2-core machine
STOP_TIMEOUT_S = 60.0  # SIGTERM lets OpenSearch flush; after this we SIGKILL
HOST = "127.0.0.1"
CLUSTER_NAME = "logllm-local"
NODE_USER = "logllm-os"
MIN_JAVA_MAJOR = 11  # OpenSearch 2.x runs on Java 11, 17 and 21
HEALTHY = ("green", "yellow")

ENV_HOME = "LOGLLM_NODE_HOME"
ENV_PORT = "LOGLLM_NODE_PORT"
ENV_VERSION = "LOGLLM_NODE_VERSION"

DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.6.1"
ARTIFACT = "org.opensearch.distribution.integ-test-zip:opensearch:{version}:zip"
MAIN_CLASS = "org.opensearch.bootstrap.OpenSearch"

_POLL_S = 1.0
# The JVM writes its pid file a few seconds after launch; a node that has not done so by then
# died during bootstrap (bad setting, wrong Java), and waiting for the full timeout would only
# delay the error.
_PIDFILE_GRACE_S = 45.0
_KILL_WAIT_S = 10.0
# bin/opensearch runs two short Java helpers, forks the node and exits: seconds, not minutes.
_LAUNCHER_TIMEOUT_S = 120.0
_LOG_TAIL_LINES = 40
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# Never send requests for 127.0.0.1 through an http_proxy from the environment.
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# ---------------------------------------------------------------------------------------------
# Pure parts: no I/O.


def default_home(env: Mapping[str, str], is_root: bool) -> Path:
    """Where the node lives unless the caller names a home.

    `LOGLLM_NODE_HOME` if set; else /var/lib/logllm/opensearch for root, because the
    unprivileged node user must be able to enter every parent directory (root's own home is
    usually mode 0700); else `${XDG_DATA_HOME:-~/.local/share}/logllm/opensearch`.
    """
    if env.get(ENV_HOME):
        return Path(env[ENV_HOME]).expanduser()
    if is_root:
        return Path("/var/lib/logllm/opensearch")
    data_home = env.get("XDG_DATA_HOME") or os.path.join(
        env.get("HOME") or str(Path.home()), ".local", "share"
    )
    return Path(data_home) / "logllm" / "opensearch"


def check_port(port: int, source: str) -> int:
    """Returns `port` if it is a usable TCP port; raises UserError naming `source` otherwise."""
    if not 1 <= port <= 65535:
        raise UserError(f"{source}={port}: not a TCP port; use 1-65535, e.g. {DEFAULT_PORT}")
    return port


def parse_port(value: str, source: str) -> int:
    """Parses a port from text such as an environment variable; raises UserError if invalid."""
    try:
        port = int(value)
    except ValueError:
        raise UserError(
            f"{source}={value!r}: not a port number; use e.g. {source}={DEFAULT_PORT}"
        ) from None
    return check_port(port, source)


def check_version(version: str, source: str) -> str:
    """Returns `version` if it looks like an OpenSearch release (x.y.z); raises UserError if not.

    The version becomes part of a Maven coordinate and of a directory name, so it is checked
    before either is built.
    """
    if not re.fullmatch(r"\d+\.\d+\.\d+", version):
        raise UserError(
            f"{source}={version!r}: not an OpenSearch release number; use e.g. {DEFAULT_VERSION}"
        )
    return version


def render_opensearch_yml(port: int) -> str:
    """The whole config/opensearch.yml of the node listening on 127.0.0.1:`port`.

    `action.auto_create_index` is left at its default so the node behaves like a real cluster.
    """
    return (
        "# Written by enricher.localnode (`logllm node install`) on every install and start;\n"
        "# change the code, not this file.\n"
        f"cluster.name: {CLUSTER_NAME}\n"
        f"node.name: {CLUSTER_NAME}-1\n"
        # Loopback only: nothing else on the network may reach an unauthenticated node, and
        # OpenSearch enforces its production bootstrap checks only on non-loopback addresses.
        f"network.host: {HOST}\n"
        f"http.port: {port}\n"
        "discovery.type: single-node\n"
        # Development disks are often nearly full; the default watermarks would then mark every
        # index read-only and tests would fail for reasons that have nothing to do with them.
        "cluster.routing.allocation.disk.threshold_enabled: false\n"
    )


def check_heap(heap: str) -> str:
    """Returns `heap` if it is a JVM memory size such as "512m" or "1g"; raises UserError if not."""
    if not re.fullmatch(r"\d+[kmg]", heap):
        raise UserError(f"heap={heap!r}: not a JVM heap size; use e.g. {DEFAULT_HEAP!r} or '512m'")
    return heap


def render_jvm_options(heap: str) -> str:
    """The config/jvm.options.d file fixing the heap; OPENSEARCH_JAVA_OPTS still overrides it."""
    return f"# Written by enricher.localnode: a small fixed heap.\n-Xms{heap}\n-Xmx{heap}\n"


def build_fetch_command(mvn: str, version: str, output_dir: Path) -> list[str]:
    """The Maven command that copies the OpenSearch `version` integ-test zip into `output_dir`.

    The zip lands as `output_dir/opensearch-<version>.zip`; Maven caches it in ~/.m2, so a
    second fetch of the same version needs no network.
    """
    return [
        mvn,
        "-q",
        "-B",
        # Re-check Maven Central for a release that an earlier, perhaps offline, run failed to
        # find; without it Maven remembers the failure for a day.
        "-U",
        "-Dstyle.color=never",
        f"{DEPENDENCY_PLUGIN}:copy",
        f"-Dartifact={ARTIFACT.format(version=version)}",
        f"-DoutputDirectory={output_dir}",
    ]


def build_start_command(dist: Path, pidfile: Path, run_as: str | None) -> list[str]:
    """The command that daemonises the node installed in `dist`, writing its pid to `pidfile`.

    `run_as` is the user to run the node as (needed under root, which OpenSearch refuses), or
    None to run it as the current user.
    """
    command = [str(dist / "bin" / "opensearch"), "-d", "-p", str(pidfile)]
    if run_as is None:
        return command
    return ["runuser", "-u", run_as, "--", *command]


def parse_java_major(version_output: str) -> int | None:
    """The major Java version in `java -version` output (8 for "1.8.0_292"), else None."""
    match = re.search(r'version "(\d+)(?:\.(\d+))?', version_output)
    if match is None:
        return None
    major = int(match.group(1))
    # Java 8 and older report themselves as 1.x.
    return int(match.group(2) or 0) if major == 1 else major


def _json_object(body: bytes) -> dict[str, object] | None:
    try:
        value = json.loads(body)
    except ValueError:  # also covers UnicodeDecodeError
        return None
    return value if isinstance(value, dict) else None


def parse_opensearch_version(body: bytes) -> str | None:
    """The version in the body of `GET /` if an OpenSearch node sent it, else None.

    Elasticsearch answers `GET /` in the same shape but without `version.distribution`, so it
    (like any other server) yields None.
    """
    root = _json_object(body)
    version = root.get("version") if root else None
    if not isinstance(version, dict) or version.get("distribution") != "opensearch":
        return None
    number = version.get("number")
    return number if isinstance(number, str) else None


def parse_health(body: bytes) -> str | None:
    """The status ("green", "yellow" or "red") in a `GET /_cluster/health` body, else None."""
    health = _json_object(body)
    status = health.get("status") if health else None
    return status if status in ("green", "yellow", "red") else None


# ---------------------------------------------------------------------------------------------
# Environment probes.


@dataclass(frozen=True)
class JavaRuntime:
    """The Java the node will run on: `java` executable, its home directory and major version."""

    java: Path
    home: Path
    major: int


def find_java(env: Mapping[str, str]) -> JavaRuntime:
    """Finds Java as bin/opensearch does (OPENSEARCH_JAVA_HOME, JAVA_HOME, then PATH) and checks it.

    Runs `java -version`. Raises UserError when no Java is found or it is older than
    MIN_JAVA_MAJOR; the integ-test zip bundles no JDK, so one must be installed.
    """
    install_hint = "install a JDK 17 (e.g. `apt-get install openjdk-17-jdk-headless`)"
    for variable in ("OPENSEARCH_JAVA_HOME", "JAVA_HOME"):
        if env.get(variable):
            java = Path(env[variable]) / "bin" / "java"
            source = f"{variable}={env[variable]}"
            if not os.access(java, os.X_OK):
                raise UserError(
                    f"{source}: no executable bin/java there; point {variable} at a JDK "
                    f"{MIN_JAVA_MAJOR}+ or unset it to use the java on PATH"
                )
            break
    else:
        path = env.get("PATH", "")
        found = shutil.which("java", path=path)
        if found is None:
            raise UserError(
                f"java: not found on PATH={path!r}, and neither OPENSEARCH_JAVA_HOME nor "
                f"JAVA_HOME is set; OpenSearch needs Java {MIN_JAVA_MAJOR}+: {install_hint} "
                "or set JAVA_HOME"
            )
        # /usr/bin/java is usually a chain of symlinks; the JDK home is two levels above the
        # real executable.
        java = Path(found).resolve()
        source = f"java on PATH ({found})"
    result = subprocess.run(
        [str(java), "-version"], capture_output=True, text=True, timeout=60, check=False
    )
    output = result.stderr + result.stdout
    major = parse_java_major(output)
    if result.returncode != 0 or major is None:
        raise UserError(
            f"{source}: `{java} -version` exited {result.returncode} and printed "
            f"{output.strip()[:200]!r}; {install_hint} or set JAVA_HOME"
        )
    if major < MIN_JAVA_MAJOR:
        raise UserError(
            f"{source}: Java {major} found, OpenSearch needs Java {MIN_JAVA_MAJOR}+; "
            f"{install_hint} and put it first on PATH or set JAVA_HOME"
        )
    return JavaRuntime(java=java, home=java.parent.parent, major=major)


def find_mvn(env: Mapping[str, str]) -> str:
    """The `mvn` executable on env's PATH; raises UserError if there is none."""
    path = env.get("PATH", "")
    found = shutil.which("mvn", path=path)
    if found is None:
        raise UserError(
            f"mvn: not found on PATH={path!r}; it fetches the OpenSearch zip from Maven Central: "
            "install Maven 3.6+ (e.g. `apt-get install maven`)"
        )
    return found


@dataclass(frozen=True)
class PortState:
    """What answers on the node's port: nothing, an OpenSearch node, or something else."""

    listening: bool
    version: str | None  # set when GET / answered as an OpenSearch node
    answer: str  # what GET / returned, for messages; "" when nothing listens


def _http_get(url: str, timeout: float) -> tuple[int, bytes] | None:
    """GET `url`: (status, first 64 KiB of the body) for any HTTP answer, None for no answer."""
    try:
        with _HTTP.open(url, timeout=timeout) as response:
            return int(response.status), bytes(response.read(65536))
    except urllib.error.HTTPError as error:
        return error.code, error.read(65536)
    except (OSError, http.client.HTTPException):  # refused, reset, timed out, not HTTP
        return None


def probe_port(port: int) -> PortState:
    """Connects to 127.0.0.1:`port` and asks `GET /` who is there."""
    try:
        with socket.create_connection((HOST, port), timeout=2.0):
            pass
    except OSError:
        return PortState(listening=False, version=None, answer="")
    reply = _http_get(f"http://{HOST}:{port}/", timeout=10.0)
    if reply is None:
        return PortState(listening=True, version=None, answer="no HTTP answer")
    status, body = reply
    answer = f"HTTP {status} {body[:120]!r}"
    return PortState(listening=True, version=parse_opensearch_version(body), answer=answer)


def _read_int(path: Path) -> int | None:
    """The number in a one-number file such as a pid file; None if it is missing or garbled."""
    try:
        return int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def _is_node_process(pid: int) -> bool:
    """True when `pid` is a live OpenSearch JVM.

    On Linux a zombie, or a pid reused by another program after the node died, counts as dead;
    elsewhere only "the pid exists" can be checked.
    """
    if not Path("/proc/self").exists():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # alive, owned by another user
            return True
        return True
    proc = Path("/proc") / str(pid)
    try:
        state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        cmdline = (proc / "cmdline").read_bytes()
    except (OSError, IndexError):  # gone, or exited between the two reads
        return False
    return state != "Z" and MAIN_CLASS.encode() in cmdline


def _tail(path: Path, lines: int, offset: int = 0) -> str:
    """The last `lines` lines of `path` after byte `offset`, or a note saying there are none."""
    try:
        with open(path, "rb") as log:
            log.seek(offset)
            text = log.read().decode(errors="replace")
    except FileNotFoundError:
        return f"(no {path})"
    return "\n".join(text.splitlines()[-lines:]) or "(nothing new)"


def _say(message: str) -> None:
    """Progress for the person at the terminal; logs are for debugging."""
    print(f"logllm node: {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# The node.


@dataclass(frozen=True)
class NodeStatus:
    """A snapshot of the node: who answers on its port and whether its own process is alive."""

    url: str
    home: Path
    installed: bool
    pid: int | None  # live OpenSearch process named by this home's pid file
    port: PortState
    health: str | None  # cluster health when an OpenSearch node answers

    @property
    def healthy(self) -> bool:
        """True when an OpenSearch node answers on the port with health yellow or green."""
        return self.port.version is not None and self.health in HEALTHY

    def describe(self) -> str:
        """One line for `logllm node status`."""
        where = f"OpenSearch at {self.url} (home {self.home})"
        if self.port.version is not None:
            owner = f"pid {self.pid}" if self.pid else "not started from this home"
            return (
                f"{where}: running, version {self.port.version}, "
                f"health {self.health or 'unknown'}, {owner}"
            )
        if self.pid is not None:
            return f"{where}: process {self.pid} alive but not answering yet (starting?)"
        if self.port.listening:
            return f"{where}: not running; the port is taken by something else: {self.port.answer}"
        installed = "installed" if self.installed else "not installed"
        return f"{where}: not running ({installed})"


class LocalNode:
    """One OpenSearch node in its own home directory, controlled through a pid file there.

    Layout of `home`: opensearch-<version>/ (the distribution, with its data/ and logs/),
    run/opensearch.pid, run/http.port, run/launcher.out (the launcher's own output) and .lock.
    Every public method but status() takes the lock, so concurrent starts (e.g. several test
    processes) launch one node.
    """

    def __init__(
        self,
        home: Path | None = None,
        port: int | None = None,
        version: str | None = None,
        heap: str = DEFAULT_HEAP,
        env: Mapping[str, str] | None = None,
    ) -> None:
        """Arguments left as None come from the environment (`env`, default os.environ).

        Raises UserError for an invalid port, version or heap, naming where it came from.
        """
        self.env: Mapping[str, str] = os.environ if env is None else env
        is_root = os.geteuid() == 0
        self.run_as: str | None = NODE_USER if is_root else None
        self.home = (home or default_home(self.env, is_root)).absolute()
        if port is not None:
            self.port = check_port(port, "port")
        elif self.env.get(ENV_PORT):
            self.port = parse_port(self.env[ENV_PORT], ENV_PORT)
        else:
            self.port = DEFAULT_PORT
        if version is not None:
            self.version = check_version(version, "version")
        else:
            self.version = check_version(self.env.get(ENV_VERSION) or DEFAULT_VERSION, ENV_VERSION)
        self.heap = check_heap(heap)

    @property
    def url(self) -> str:
        """The node's HTTP address, e.g. http://127.0.0.1:9200."""
        return f"http://{HOST}:{self.port}"

    @property
    def dist(self) -> Path:
        """The unpacked distribution (bin/, config/, data/, logs/ ...)."""
        return self.home / f"opensearch-{self.version}"

    @property
    def pidfile(self) -> Path:
        """Written by the JVM once it runs, removed by it on a clean shutdown."""
        return self.home / "run" / "opensearch.pid"

    @property
    def log_file(self) -> Path:
        """The node's main log (named after the cluster by its log4j2 config)."""
        return self.dist / "logs" / f"{CLUSTER_NAME}.log"

    @property
    def launched_port_file(self) -> Path:
        """The port the running node was launched with (the config may have changed since)."""
        return self.home / "run" / "http.port"

    @property
    def launcher_log(self) -> Path:
        """stdout/stderr of bin/opensearch: where errors before logging starts end up."""
        return self.home / "run" / "launcher.out"

    # -- public operations ---------------------------------------------------------------------

    def install(self) -> Path:
        """Installs and configures the node if needed; idempotent. Returns the distribution dir.

        Checks Java, fetches the zip with Maven when the distribution is missing (~60 MB, a few
        seconds; no network once Maven has cached it), rewrites the config, and under root
        creates the node user and gives it the home. Raises UserError when Java, Maven, the
        download or the home directory is unusable.
        """
        with self._locked():
            self._prepare()
        return self.dist

    def start(self, timeout: float = DEFAULT_START_TIMEOUT_S) -> str:
        """Makes sure a healthy node answers on the port; idempotent. Returns the URL.

        If an OpenSearch node already answers with health yellow or green, nothing is done. If
        this home's node is still starting, waits for it. Otherwise removes a stale pid file,
        installs if needed, daemonises the node and waits up to `timeout` seconds for yellow.
        Raises UserError if the port is taken by something that is not OpenSearch, if this
        home's running node listens on a different port, or if the node does not come up (the
        message then holds the tail of its logs, and a node launched by this call is stopped).
        """
        with self._locked():
            pid = self._live_pid()
            state = probe_port(self.port)
            if state.version is not None and self._health() in HEALTHY:
                _say(f"OpenSearch {state.version} is already running at {self.url}")
                return self.url
            if pid is not None:
                self._check_running_port(pid)
                _say(f"the node from {self.home} is already starting (pid {pid}); waiting")
                self._wait_until_healthy(timeout, log_offset=None)
                return self.url
            if state.listening and state.version is None:
                raise UserError(
                    f"port {self.port}: taken by something that is not OpenSearch "
                    f"({state.answer}); stop it, or run the node on a free port with "
                    f"{ENV_PORT}=9201 (or --port)"
                )
            if state.version is None:
                log_offset: int | None = self._launch(self._prepare())
            else:
                _say(f"OpenSearch {state.version} answers at {self.url} but is not ready; waiting")
                log_offset = None
            self._wait_until_healthy(timeout, log_offset)
            return self.url

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> bool:
        """Stops this home's node: SIGTERM, then SIGKILL after `timeout` s; idempotent.

        Returns True if a node was stopped, False if none was running. A node answering on
        the port that this home did not start is left alone (and reported). Raises UserError
        if the process cannot be signalled or survives SIGKILL.
        """
        with self._locked():
            pid = self._live_pid()
            if pid is None:
                state = probe_port(self.port)
                if state.version is not None:
                    _say(
                        f"OpenSearch {state.version} answers at {self.url}, but no process from "
                        f"{self.pidfile} is alive; not stopping a node this home did not start"
                    )
                else:
                    _say("not running")
                return False
            _say(f"stopping pid {pid}")
            self._terminate(pid, timeout)
            _say("stopped")
            return True

    def status(self) -> NodeStatus:
        """Reports the node's state without changing anything (no lock, no cleanup)."""
        pid = _read_int(self.pidfile)
        state = probe_port(self.port)
        return NodeStatus(
            url=self.url,
            home=self.home,
            installed=(self.dist / "bin" / "opensearch").exists(),
            pid=pid if pid is not None and _is_node_process(pid) else None,
            port=state,
            health=self._health() if state.version is not None else None,
        )

    # -- steps ---------------------------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Holds an exclusive lock on the home (creating it) for one install, start or stop."""
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.home / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _prepare(self) -> JavaRuntime:
        """install() without the lock; returns the Java the node will run on."""
        java = find_java(self.env)
        # Settle the node user before the download, so an unusable home fails fast.
        account = _node_account(self.run_as, self.home) if self.run_as is not None else None
        if not (self.dist / "bin" / "opensearch").exists():
            self._fetch_and_unpack()
        config = self.dist / "config"
        _write_if_changed(config / "opensearch.yml", render_opensearch_yml(self.port))
        jvm_options = config / "jvm.options.d" / "logllm.options"
        _write_if_changed(jvm_options, render_jvm_options(self.heap))
        self.pidfile.parent.mkdir(parents=True, exist_ok=True)
        if account is not None:
            _chown_tree(self.home, account)
        return java

    def _fetch_and_unpack(self) -> None:
        mvn = find_mvn(self.env)
        _say(f"installing OpenSearch {self.version} into {self.dist}")
        started = time.monotonic()
        # Download and unpack next to the destination, then rename: an interrupted install
        # leaves no half-written distribution that would pass for an installed one.
        with tempfile.TemporaryDirectory(dir=self.home, prefix=".install-") as scratch:
            scratch_dir = Path(scratch)
            command = build_fetch_command(mvn, self.version, scratch_dir)
            logger.debug("running %s", command)
            result = subprocess.run(
                command, cwd=scratch_dir, env=dict(self.env), capture_output=True, text=True
            )
            if result.returncode != 0:
                output = _ANSI.sub("", result.stdout + result.stderr).splitlines()
                errors = [line for line in output if line.startswith("[ERROR]")] or output[-1:]
                raise UserError(
                    f"OpenSearch {self.version}: Maven could not fetch "
                    f"{ARTIFACT.format(version=self.version)} (exit {result.returncode}: "
                    f"{errors[0] if errors else 'no output'}); fix what Maven reports. Usual "
                    "causes: no access to https://repo.maven.apache.org, an unwritable ~/.m2, or "
                    f"a release that does not exist (choose another with {ENV_VERSION})"
                )
            archive = scratch_dir / f"opensearch-{self.version}.zip"
            unpacked = scratch_dir / "unpacked"
            _unpack(archive, unpacked)
            top = unpacked / self.dist.name
            if not (top / "bin" / "opensearch").exists():
                raise UserError(
                    f"{archive}: no {self.dist.name}/bin/opensearch inside; the artifact is not "
                    "an OpenSearch distribution zip, delete it from ~/.m2 and install again"
                )
            top.rename(self.dist)
        _say(f"installed in {time.monotonic() - started:.1f} s")

    def _launch(self, java: JavaRuntime) -> int:
        """Daemonises the node on `java`; returns the size its log had before, for error reports.

        Returns as soon as the launcher has forked the JVM; raises UserError if it fails.
        """
        log_offset = self.log_file.stat().st_size if self.log_file.exists() else 0
        command = build_start_command(self.dist, self.pidfile, self.run_as)
        environment = dict(self.env)
        # Run on the Java that find_java checked, whatever PATH runuser sets for the node user.
        environment["OPENSEARCH_JAVA_HOME"] = str(java.home)
        # A config directory from the caller's environment would bypass the config written here.
        environment.pop("OPENSEARCH_PATH_CONF", None)
        _say(f"starting OpenSearch {self.version} (Java {java.major}) at {self.url}")
        logger.debug("running %s", command)
        self.launched_port_file.write_text(f"{self.port}\n")
        with open(self.launcher_log, "w") as output:
            # A new session keeps Ctrl-C in the caller's terminal (e.g. during `make test`)
            # from reaching the node, which outlives this process on purpose.
            result = subprocess.run(
                command,
                cwd=self.dist,
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                timeout=_LAUNCHER_TIMEOUT_S,
                check=False,
            )
        if result.returncode != 0:
            problem = f"`{' '.join(command)}` exited {result.returncode}"
            raise UserError(self._failure(problem, log_offset))
        return log_offset

    def _wait_until_healthy(self, timeout: float, log_offset: int | None) -> None:
        """Polls cluster health until yellow or green; raises UserError with the logs if not.

        `log_offset` is what `_launch` returned when this call launched the node, else None.
        Gives up early when the node process dies or never writes its pid file. A node launched
        by this call is stopped before raising, so the next start begins clean.
        """
        launched = log_offset is not None
        started = time.monotonic()
        seen_pid: int | None = None
        while True:
            health = self._health()
            elapsed = time.monotonic() - started
            if health in HEALTHY:
                _say(f"up at {self.url} (health {health}) after {elapsed:.1f} s")
                return
            seen_pid = _read_int(self.pidfile) or seen_pid
            if seen_pid is not None and not _is_node_process(seen_pid):
                problem = f"the node process (pid {seen_pid}) exited"
            elif launched and seen_pid is None and elapsed > _PIDFILE_GRACE_S:
                problem = f"the node wrote no pid file to {self.pidfile} in {elapsed:.0f} s"
            elif elapsed > timeout:
                problem = f"health was {health or 'unreachable'} after {timeout:.0f} s"
            else:
                time.sleep(_POLL_S)
                continue
            if launched and seen_pid is not None and _is_node_process(seen_pid):
                self._terminate(seen_pid, STOP_TIMEOUT_S)
            raise UserError(self._failure(problem, log_offset or 0))

    def _failure(self, problem: str, log_offset: int) -> str:
        """The message for a node that did not come up: the problem, the log tails, the fix.

        Only the part of the node log after byte `log_offset` is shown, so a launch that failed
        early does not show the previous run's log as if it were its own.
        """
        return (
            f"OpenSearch {self.version} did not come up at {self.url}: {problem}.\n"
            f"--- {self.launcher_log} (the launcher's output) ---\n"
            f"{_tail(self.launcher_log, _LOG_TAIL_LINES)}\n"
            f"--- last {_LOG_TAIL_LINES} lines of {self.log_file} ---\n"
            f"{_tail(self.log_file, _LOG_TAIL_LINES, log_offset)}\n"
            "--- end of logs ---\n"
            "fix the cause shown in the logs; on a slow machine pass a longer --timeout"
        )

    def _terminate(self, pid: int, timeout: float) -> None:
        try:
            os.kill(pid, signal.SIGTERM)
            if not _wait_for_exit(pid, timeout):
                _say(f"pid {pid} ignored SIGTERM for {timeout:.0f} s; sending SIGKILL")
                os.kill(pid, signal.SIGKILL)
                if not _wait_for_exit(pid, _KILL_WAIT_S):
                    raise UserError(
                        f"pid {pid} (from {self.pidfile}): still alive after SIGKILL; "
                        "check it with `ps` and end it by hand"
                    )
        except ProcessLookupError:  # exited on its own between the check and the signal
            pass
        except PermissionError:
            raise UserError(
                f"pid {pid} (from {self.pidfile}): not allowed to signal it; stop the node as "
                "the user that started it (or as root)"
            ) from None
        self.pidfile.unlink(missing_ok=True)

    def _live_pid(self) -> int | None:
        """The pid of this home's running node; removes a pid file whose process is gone."""
        pid = _read_int(self.pidfile)
        if pid is not None and _is_node_process(pid):
            return pid
        if self.pidfile.exists():
            logger.info("removing stale pid file %s (pid %s is not running)", self.pidfile, pid)
            self.pidfile.unlink()
        return None

    def _check_running_port(self, pid: int) -> None:
        """Raises UserError if this home's node `pid` was launched on another port."""
        running_port = _read_int(self.launched_port_file)
        if running_port is not None and running_port != self.port:
            raise UserError(
                f"port {self.port}: the node from {self.home} (pid {pid}) runs on port "
                f"{running_port}; stop it first (`logllm node stop`) or "
                f"use {ENV_PORT}={running_port}"
            )

    def _health(self) -> str | None:
        reply = _http_get(f"{self.url}/_cluster/health", timeout=10.0)
        return parse_health(reply[1]) if reply else None


def _write_if_changed(path: Path, text: str) -> None:
    """Writes `text` to `path` unless it already holds exactly that (keeps mtimes stable)."""
    if path.exists() and path.read_text() == text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    logger.info("wrote %s", path)


def _unpack(archive: Path, destination: Path) -> None:
    """Extracts `archive` keeping the Unix modes (zipfile drops them; bin/ needs its x bits)."""
    try:
        with zipfile.ZipFile(archive) as zipped:
            for member in zipped.infolist():
                target = Path(zipped.extract(member, destination))
                mode = (member.external_attr >> 16) & 0o777
                if mode:
                    target.chmod(mode)
    except zipfile.BadZipFile as error:
        raise UserError(
            f"{archive}: not a valid zip ({error}); delete the copy Maven cached under "
            "~/.m2/repository/org/opensearch and install again"
        ) from None


def _node_account(user: str, home: Path) -> pwd.struct_passwd:
    """The account the node runs as under root, created if missing; checks it can reach `home`."""
    try:
        account = pwd.getpwnam(user)
    except KeyError:
        _create_system_user(user)
        account = pwd.getpwnam(user)
    _check_traversable(home, account.pw_uid, user)
    return account


def _chown_tree(root: Path, account: pwd.struct_passwd) -> None:
    """Gives `account` everything under `root` (only stats what it already owns)."""
    for directory, subdirs, files in os.walk(root):
        for name in [directory, *(os.path.join(directory, n) for n in subdirs + files)]:
            info = os.lstat(name)
            if (info.st_uid, info.st_gid) != (account.pw_uid, account.pw_gid):
                os.chown(name, account.pw_uid, account.pw_gid, follow_symlinks=False)


def _create_system_user(user: str) -> None:
    useradd = shutil.which("useradd")
    if useradd is None:
        raise UserError(
            f"user {user}: does not exist and `useradd` is not on PATH; create a system user "
            f"named {user} by hand, or run as a non-root user (OpenSearch refuses root)"
        )
    command = [useradd, "--system", "--user-group", "--no-create-home"]
    result = subprocess.run(
        [*command, "--shell", "/usr/sbin/nologin", user], capture_output=True, text=True
    )
    if result.returncode != 0:
        raise UserError(
            f"user {user}: `useradd` failed ({result.stderr.strip()}); create the system user "
            "by hand, or run as a non-root user (OpenSearch refuses root)"
        )
    _say(f"created system user {user} to run OpenSearch (it refuses to run as root)")


def _check_traversable(home: Path, uid: int, user: str) -> None:
    """Raises UserError if `user` (uid) cannot enter one of the directories above `home`."""
    for parent in home.parents:
        info = parent.stat()
        if info.st_uid != uid and not info.st_mode & 0o001:
            raise UserError(
                f"{ENV_HOME}={home}: the node runs as {user}, which cannot enter {parent} "
                f"(mode {info.st_mode & 0o777:o}); choose a home it can reach, e.g. "
                f"{ENV_HOME}=/var/lib/logllm/opensearch, or `chmod o+x {parent}`"
            )


def _wait_for_exit(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _is_node_process(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def ensure_running(timeout: float = DEFAULT_START_TIMEOUT_S) -> str:
    """Starts the node configured by the environment unless it is up; returns its URL.

    For tests, the demo and benchmarks. Raises UserError if the node cannot be started.
    """
    return LocalNode().start(timeout)


# ---------------------------------------------------------------------------------------------
# Command line.


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds `logllm node install|start|stop|status`."""
    parser = subparsers.add_parser(
        "node",
        help="install, start, stop or inspect the local OpenSearch node",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    _add_actions(parser)


def _add_actions(parser: argparse.ArgumentParser) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--home",
        type=Path,
        help=f"node directory (default: ${ENV_HOME}, else /var/lib/logllm/opensearch as root, "
        "else $XDG_DATA_HOME/logllm/opensearch)",
    )
    common.add_argument(
        "--port", type=int, help=f"HTTP port on {HOST} (default: ${ENV_PORT}, else {DEFAULT_PORT})"
    )
    common.add_argument(
        "--opensearch-version",
        help=f"OpenSearch release (default: ${ENV_VERSION}, else {DEFAULT_VERSION})",
    )
    actions = parser.add_subparsers(dest="node_action", required=True, metavar="ACTION")
    actions.add_parser(
        "install", parents=[common], help="fetch and configure the node (idempotent)"
    ).set_defaults(handler=_cmd_install)
    start = actions.add_parser(
        "start", parents=[common], help="start the node and wait until it is healthy (idempotent)"
    )
    start.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_START_TIMEOUT_S,
        help="seconds to wait for health yellow (default: %(default)s)",
    )
    start.set_defaults(handler=_cmd_start)
    actions.add_parser(
        "stop", parents=[common], help="stop the node (idempotent)"
    ).set_defaults(handler=_cmd_stop)
    actions.add_parser(
        "status", parents=[common], help="print the node's state; exit 3 if it is not healthy"
    ).set_defaults(handler=_cmd_status)


def _node(args: argparse.Namespace) -> LocalNode:
    # Checked here too so that errors name the flag the user typed, not the Python argument.
    if args.port is not None:
        check_port(args.port, "--port")
    if args.opensearch_version is not None:
        check_version(args.opensearch_version, "--opensearch-version")
    return LocalNode(home=args.home, port=args.port, version=args.opensearch_version)


def _cmd_install(args: argparse.Namespace) -> int:
    dist = _node(args).install()
    _say(f"installed and configured: {dist}")
    return 0


def _cmd_start(args: argparse.Namespace) -> int:
    print(_node(args).start(args.timeout))
    return 0


def _cmd_stop(args: argparse.Namespace) -> int:
    _node(args).stop()
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    status = _node(args).status()
    print(status.describe())
    return 0 if status.healthy else 3  # 3 is "not running" in LSB init-script convention


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m enricher.localnode ACTION`: the same as `logllm node ACTION`."""
    from enricher.cli import main as cli_main

    return cli_main(["node", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
