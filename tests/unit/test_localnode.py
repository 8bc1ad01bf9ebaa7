"""Unit tests of enricher.localnode: its pure parts and its errors. No OpenSearch node needed.

A few tests talk to a throwaway HTTP server on 127.0.0.1 that plays "not OpenSearch" or
"a healthy OpenSearch", because what the manager does about the port is the point there.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from enricher.localnode import (
    LocalNode,
    NodeStatus,
    PortState,
    build_fetch_command,
    build_start_command,
    check_heap,
    default_home,
    find_java,
    find_mvn,
    parse_health,
    parse_java_major,
    parse_opensearch_version,
    register,
    render_jvm_options,
    render_opensearch_yml,
)
from model.errors import UserError

OPENSEARCH_ROOT = {
    "name": "n1",
    "cluster_name": "c",
    "version": {"distribution": "opensearch", "number": "2.19.5"},
    "tagline": "The OpenSearch Project: https://opensearch.org/",
}
ELASTICSEARCH_ROOT = {"name": "n1", "version": {"number": "8.15.0"}, "tagline": "You Know..."}


def settings_of(yml: str) -> dict[str, str]:
    """The `key: value` lines of a flat YAML file, comments skipped."""
    pairs = (line.split(":", 1) for line in yml.splitlines() if line and not line.startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def write_fake_java(directory: Path, version_line: str) -> Path:
    """A `java` script that prints `version_line` to stderr like `java -version` does."""
    bin_dir = directory / "bin"
    bin_dir.mkdir(parents=True)
    java = bin_dir / "java"
    java.write_text(f"#!/bin/sh\necho '{version_line}' >&2\n")
    java.chmod(0o755)
    return java


@pytest.fixture
def http_server(request: pytest.FixtureRequest) -> Iterator[int]:
    """Serves `request.param` ({path: (status, body)}) on a free 127.0.0.1 port; yields the port."""
    routes: dict[str, tuple[int, bytes]] = request.param

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body = routes.get(self.path.split("?")[0], (404, b"no such page"))
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # keep test output clean
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


# -- config and commands -----------------------------------------------------------------------


def test_config_binds_loopback_as_a_single_node_without_disk_watermarks() -> None:
    settings = settings_of(render_opensearch_yml(9201))
    assert settings["network.host"] == "127.0.0.1"
    assert settings["discovery.type"] == "single-node"
    assert settings["http.port"] == "9201"
    assert settings["cluster.routing.allocation.disk.threshold_enabled"] == "false"
    assert "action.auto_create_index" not in settings


def test_jvm_options_fix_the_heap() -> None:
    lines = render_jvm_options("512m").splitlines()
    assert "-Xms512m" in lines
    assert "-Xmx512m" in lines


@pytest.mark.parametrize("heap", ["", "1", "1gb", "-1g", "1g -Xss1m"])
def test_check_heap_rejects_what_the_jvm_would_not_take(heap: str) -> None:
    with pytest.raises(UserError, match=r"heap=.*use e\.g\. '1g'"):
        check_heap(heap)


def test_start_command_runs_the_node_directly_for_a_normal_user() -> None:
    dist, pidfile = Path("/n/opensearch-2.19.5"), Path("/n/run/opensearch.pid")
    assert build_start_command(dist, pidfile, run_as=None) == [
        "/n/opensearch-2.19.5/bin/opensearch",
        "-d",
        "-p",
        "/n/run/opensearch.pid",
    ]


def test_start_command_drops_root_to_the_node_user() -> None:
    dist, pidfile = Path("/n/opensearch-2.19.5"), Path("/n/run/opensearch.pid")
    command = build_start_command(dist, pidfile, run_as="logllm-os")
    assert command[:4] == ["runuser", "-u", "logllm-os", "--"]
    assert command[4:] == build_start_command(dist, pidfile, run_as=None)


def test_fetch_command_copies_the_pinned_integ_test_zip() -> None:
    command = build_fetch_command("/usr/bin/mvn", "2.19.5", Path("/tmp/x"))
    assert command[0] == "/usr/bin/mvn"
    assert "-B" in command
    assert "org.apache.maven.plugins:maven-dependency-plugin:3.6.1:copy" in command
    assert "-Dartifact=org.opensearch.distribution.integ-test-zip:opensearch:2.19.5:zip" in command
    assert "-DoutputDirectory=/tmp/x" in command


# -- settings from the environment -------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "is_root", "expected"),
    [
        ({"LOGLLM_NODE_HOME": "/srv/os", "HOME": "/h"}, True, "/srv/os"),
        ({"LOGLLM_NODE_HOME": "/srv/os", "HOME": "/h"}, False, "/srv/os"),
        ({"HOME": "/root"}, True, "/var/lib/logllm/opensearch"),
        ({"XDG_DATA_HOME": "/x", "HOME": "/h"}, False, "/x/logllm/opensearch"),
        ({"HOME": "/h"}, False, "/h/.local/share/logllm/opensearch"),
    ],
)
def test_default_home(env: dict[str, str], is_root: bool, expected: str) -> None:
    assert default_home(env, is_root) == Path(expected)


def test_port_and_version_come_from_the_environment(tmp_path: Path) -> None:
    env = {"LOGLLM_NODE_PORT": "9299", "LOGLLM_NODE_VERSION": "2.19.4"}
    node = LocalNode(home=tmp_path, env=env)
    assert (node.port, node.version, node.url) == (9299, "2.19.4", "http://127.0.0.1:9299")
    assert node.dist == tmp_path / "opensearch-2.19.4"


@pytest.mark.parametrize(
    ("kwargs", "env", "message"),
    [
        ({}, {"LOGLLM_NODE_PORT": "nine"}, "LOGLLM_NODE_PORT='nine': not a port number"),
        ({}, {"LOGLLM_NODE_PORT": "0"}, "LOGLLM_NODE_PORT=0: not a TCP port"),
        ({"port": 70000}, {}, "port=70000: not a TCP port"),
        ({}, {"LOGLLM_NODE_VERSION": "latest"}, "LOGLLM_NODE_VERSION='latest': not an OpenSearch"),
        ({"version": "2.19"}, {}, "version='2.19': not an OpenSearch release"),
    ],
)
def test_bad_settings_name_their_source_and_value(
    tmp_path: Path, kwargs: dict[str, Any], env: dict[str, str], message: str
) -> None:
    with pytest.raises(UserError, match=r"e\.g\. ") as raised:
        LocalNode(home=tmp_path, env=env, **kwargs)
    assert message in str(raised.value)


# -- Java and Maven ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("output", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15\nOpenJDK Runtime Environment', 17),
        ('openjdk version "21" 2023-09-19', 21),
        ('java version "1.8.0_292"', 8),
        ('openjdk version "11.0.2" 2019-01-15', 11),
        ("bash: java: command not found", None),
    ],
)
def test_parse_java_major(output: str, major: int | None) -> None:
    assert parse_java_major(output) == major


def test_missing_java_names_the_path_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(UserError) as raised:
        find_java({"PATH": str(tmp_path)})
    message = str(raised.value)
    assert f"java: not found on PATH='{tmp_path}'" in message
    assert "JAVA_HOME" in message
    assert "install a JDK 17" in message


def test_java_home_without_java_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=f"JAVA_HOME={tmp_path}: no executable bin/java"):
        find_java({"JAVA_HOME": str(tmp_path), "PATH": ""})


def test_old_java_is_refused_with_its_version(tmp_path: Path) -> None:
    java = write_fake_java(tmp_path / "jdk8", 'java version "1.8.0_292"')
    with pytest.raises(UserError, match="Java 8 found, OpenSearch needs Java 11\\+"):
        find_java({"PATH": str(java.parent)})


def test_java_on_path_is_found_with_its_home(tmp_path: Path) -> None:
    java = write_fake_java(tmp_path / "jdk17", 'openjdk version "17.0.15" 2025-04-15')
    runtime = find_java({"PATH": str(java.parent)})
    assert (runtime.java, runtime.home, runtime.major) == (java, tmp_path / "jdk17", 17)


def test_opensearch_java_home_wins_over_path(tmp_path: Path) -> None:
    chosen = write_fake_java(tmp_path / "jdk21", 'openjdk version "21" 2023-09-19')
    on_path = write_fake_java(tmp_path / "jdk8", 'java version "1.8.0_292"')
    env = {"OPENSEARCH_JAVA_HOME": str(tmp_path / "jdk21"), "PATH": str(on_path.parent)}
    assert find_java(env).java == chosen


def test_missing_mvn_names_the_path_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"mvn: not found on PATH=.*install Maven"):
        find_mvn({"PATH": str(tmp_path)})


# -- responses ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "version"),
    [
        (json.dumps(OPENSEARCH_ROOT).encode(), "2.19.5"),
        (json.dumps(ELASTICSEARCH_ROOT).encode(), None),
        (b"<html>It works!</html>", None),
        (b"[1, 2]", None),
        (b"\xff\xfe", None),
    ],
)
def test_parse_opensearch_version(body: bytes, version: str | None) -> None:
    assert parse_opensearch_version(body) == version


@pytest.mark.parametrize(
    ("body", "health"),
    [
        (b'{"cluster_name": "c", "status": "green", "number_of_nodes": 1}', "green"),
        (b'{"status": "yellow"}', "yellow"),
        (b'{"status": "red", "timed_out": true}', "red"),
        (b'{"status": "purple"}', None),
        (b'{"error": {"type": "cluster_block_exception"}, "status": 503}', None),
        (b"Service Unavailable", None),
    ],
)
def test_parse_health(body: bytes, health: str | None) -> None:
    assert parse_health(body) == health


def test_status_lines_say_what_runs() -> None:
    def status(port: PortState, pid: int | None, health: str | None) -> str:
        return NodeStatus("http://127.0.0.1:9200", Path("/n"), True, pid, port, health).describe()

    answering = PortState(listening=True, version="2.19.5", answer="HTTP 200")
    assert "running, version 2.19.5, health green, pid 42" in status(answering, 42, "green")
    assert "not started from this home" in status(answering, None, "yellow")
    silent = PortState(listening=False, version=None, answer="")
    assert "process 42 alive but not answering yet" in status(silent, 42, None)
    assert status(silent, None, None).endswith("not running (installed)")
    other = PortState(listening=True, version=None, answer="HTTP 200 b'hi'")
    assert "taken by something else: HTTP 200 b'hi'" in status(other, None, None)


# -- what the manager does about the port and the pid file -------------------------------------


@pytest.mark.parametrize("http_server", [{"/": (200, b"<html>It works!</html>")}], indirect=True)
def test_start_refuses_a_port_taken_by_something_else(tmp_path: Path, http_server: int) -> None:
    node = LocalNode(home=tmp_path, port=http_server, env={})
    with pytest.raises(UserError) as raised:
        node.start(timeout=5)
    message = str(raised.value)
    assert f"port {http_server}: taken by something that is not OpenSearch" in message
    assert "It works!" in message
    assert "LOGLLM_NODE_PORT=9201" in message
    assert not node.dist.exists()


HEALTHY_NODE = {
    "/": (200, json.dumps(OPENSEARCH_ROOT).encode()),
    "/_cluster/health": (200, b'{"status": "green"}'),
}


@pytest.mark.parametrize("http_server", [HEALTHY_NODE], indirect=True)
def test_start_leaves_a_healthy_node_alone(tmp_path: Path, http_server: int) -> None:
    # env={} also proves nothing is installed: without PATH, Java and Maven cannot be found.
    node = LocalNode(home=tmp_path, port=http_server, env={})
    assert node.start(timeout=5) == f"http://127.0.0.1:{http_server}"
    assert node.start(timeout=5) == node.url
    assert node.status().healthy
    assert not node.dist.exists()


def test_stop_removes_a_stale_pid_file_and_is_idempotent(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    node = LocalNode(home=tmp_path, port=free_port(), env={})
    node.pidfile.parent.mkdir(parents=True)
    node.pidfile.write_text(f"{dead.pid}\n")
    assert node.stop() is False
    assert not node.pidfile.exists()
    assert node.stop() is False


def test_a_pid_reused_by_another_program_is_never_signalled(tmp_path: Path) -> None:
    node = LocalNode(home=tmp_path, port=free_port(), env={})
    node.pidfile.parent.mkdir(parents=True)
    node.pidfile.write_text(str(os.getpid()))  # this pytest process: alive, but not OpenSearch
    assert node.stop() is False  # returning at all means pytest was not killed
    assert not node.pidfile.exists()


def test_status_of_a_node_that_is_not_installed(tmp_path: Path) -> None:
    status = LocalNode(home=tmp_path, port=free_port(), env={}).status()
    assert not status.healthy
    assert (status.installed, status.pid, status.health) == (False, None, None)
    assert status.describe().endswith("not running (not installed)")


def test_python_m_entry_point_prints_help() -> None:
    parser_help = subprocess.run(
        [sys.executable, "-m", "enricher.localnode", "start", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "--timeout" in parser_help
    assert "--port" in parser_help


def test_register_adds_logllm_node_with_its_actions() -> None:
    parser = argparse.ArgumentParser(prog="logllm")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["node", "start", "--port", "9201", "--timeout", "5"])
    assert (args.command, args.node_action, args.port, args.timeout) == ("node", "start", 9201, 5.0)
    assert callable(args.handler)


def test_cli_errors_name_the_flag_the_user_typed() -> None:
    parser = argparse.ArgumentParser(prog="logllm")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["node", "status", "--port", "70000"])
    with pytest.raises(UserError, match="--port=70000: not a TCP port"):
        args.handler(args)
