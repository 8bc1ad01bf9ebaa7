"""`logllm systemd install`: the worker as a hardened systemd service.

    render the unit (absolute paths of this Python environment) -> plan files + commands
    -> write the files under --root -> run the commands that can run here, print the others
       (all of them with --dry-run or a --root other than /; the systemctl ones when systemd is
       not PID 1)

Files: the unit (overwritten, it is generated), the settings file (only if absent: it holds the
operator's settings), and with --gpu a drop-in opening the NVIDIA devices. Commands: create the
system user (if missing), `systemctl daemon-reload`, `systemctl enable --now`.

Rendering and planning are pure (`render_unit`, `render_env_file`, `plan_install`); only
`install` touches the system.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shlex
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from importlib.resources import files
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import BaseModel, SecretStr

from model.errors import UserError

UNIT_NAME = "logllm-enricher.service"
GPU_DROPIN_NAME = "gpu.conf"
DEFAULT_USER = "logllm"
DEFAULT_ENV_FILE = PurePosixPath("/etc/logllm/enricher.env")
DEFAULT_UNIT_DIR = PurePosixPath("/etc/systemd/system")
# StateDirectory=logllm in the unit; also the system user's home.
STATE_DIR = PurePosixPath("/var/lib/logllm")
# Where ProtectHome=yes hides everything; code or models there need ProtectHome=read-only.
HOME_TREES = (PurePosixPath("/home"), PurePosixPath("/root"), PurePosixPath("/run/user"))
_PLACEHOLDER = re.compile(r"@[A-Z_]+@")
# Values systemd's EnvironmentFile parser takes literally without quotes.
_PLAIN_VALUE = re.compile(r"^[A-Za-z0-9_@%+=:,./*-]*$")


def _template(name: str) -> str:
    return files("enricher.systemd").joinpath(name).read_text(encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# Rendering (pure).


def protect_home_for(read_paths: Sequence[PurePosixPath]) -> str:
    """ProtectHome= value: "yes" (hide /home, /root, /run/user), or "read-only" when the code or
    model the worker reads lives there."""
    under_home = any(tree == path or tree in path.parents for path in read_paths for tree in HOME_TREES)
    return "read-only" if under_home else "yes"


def render_unit(exec_start: PurePosixPath, env_file: PurePosixPath, user: str, protect_home: str) -> str:
    """The unit file for these absolute paths and this user (its group has the same name).

    Raises:
        UserError: a relative path, or a value with characters a unit file cannot hold unquoted.
    """
    for what, path in (("the logllm executable", exec_start), ("--env-file", env_file)):
        if not path.is_absolute():
            raise UserError(f"{what} {str(path)!r} must be an absolute path")
        if re.search(r"[\s\\%$\"']", str(path)):
            raise UserError(f"{what} {str(path)!r} contains spaces, quotes or %/$/\\; install into a plainer path")
    if not re.fullmatch(r"[a-z_][a-z0-9_-]*", user):
        raise UserError(f"--user {user!r} is not a valid system user name; use e.g. {DEFAULT_USER}")
    values = {
        "@EXEC_START@": str(exec_start),
        "@ENV_FILE@": str(env_file),
        "@USER@": user,
        "@GROUP@": user,
        "@PROTECT_HOME@": protect_home,
    }
    return _PLACEHOLDER.sub(lambda match: values[match.group(0)], _template(UNIT_NAME))


def env_quote(value: str) -> str:
    """`value` as systemd's EnvironmentFile parser reads it back: plain when safe, else in double
    quotes, where a backslash escapes \\ " ` and $ (so regexes keep their backslashes)."""
    if _PLAIN_VALUE.match(value):
        return value
    return '"' + re.sub(r'([\\"`$])', r"\\\1", value) + '"'


def _env_value(value: Any) -> str | None:
    """A default as the LOGLLM_* variable would spell it (None: no default to show)."""
    if value is None or isinstance(value, SecretStr):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(str(item) for item in value)
    if isinstance(value, Path | datetime):
        return str(value)
    return value if isinstance(value, str) else json.dumps(value)


def render_env_file() -> str:
    """The settings file: every LOGLLM_* variable commented out with its description and default,
    like `logllm config show`, so an operator uncomments what differs."""
    from enricher.settings import Settings, env_name

    lines = [
        "# Settings of the logllm-enricher service, read by systemd (EnvironmentFile=) at each start;",
        "# apply changes with `systemctl restart logllm-enricher`. One VARIABLE=value per line; every",
        "# line below shows a default, commented out. Keep this file 0640 root: it may hold secrets.",
        "# A TOML file works too: LOGLLM_CONFIG_FILE=/etc/logllm/enricher.toml (these variables override it).",
        "",
    ]
    for section_name, section_info in Settings.model_fields.items():
        section_cls = section_info.annotation
        assert isinstance(section_cls, type) and issubclass(section_cls, BaseModel)
        defaults = section_cls()
        lines.append(f"# ---- [{section_name}] {section_info.description}")
        for name, info in section_cls.model_fields.items():
            variable = env_name((section_name, name))
            value = _env_value(getattr(defaults, name))
            lines.append(f"# {info.description}")
            lines.append(f"#{variable}=" + ("" if value is None else env_quote(value)))
        lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Planning (pure).


@dataclass(frozen=True)
class InstallOptions:
    """What `logllm systemd install` was asked to do; paths are as seen on the target system."""

    user: str = DEFAULT_USER
    env_file: PurePosixPath = DEFAULT_ENV_FILE
    unit_dir: PurePosixPath = DEFAULT_UNIT_DIR
    root: Path = Path("/")
    dry_run: bool = False
    enable: bool = True
    gpu: bool = False


@dataclass(frozen=True)
class PlannedFile:
    path: PurePosixPath  # on the target system (written under the root)
    content: str
    mode: int
    overwrite: bool  # False: an existing file is the operator's and stays
    dir_mode: int | None = None  # for its folder, if that has to be created


@dataclass(frozen=True)
class InstallPlan:
    files: list[PlannedFile]
    commands: list[list[str]]  # to run now, in order
    deferred: list[list[str]]  # for the operator to run (printed), in order after `commands`
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Host:
    """Facts about the system `plan_install` depends on (gathered by `Host.probe`)."""

    exec_start: PurePosixPath  # this environment's logllm executable
    read_paths: tuple[PurePosixPath, ...]  # code and model the service must be able to read
    user_exists: bool
    systemd_running: bool  # systemd is PID 1 here (sd_booted)

    @classmethod
    def probe(cls, user: str, root: Path) -> Host:
        """Raises UserError when this Python environment has no `logllm` executable."""
        import enricher
        from enricher.settings import DEFAULT_MODEL_DIR

        executable = Path(sys.prefix) / "bin" / "logllm"
        if not executable.is_file():
            raise UserError(
                f"{executable} does not exist: run `logllm systemd install` with the logllm of the Python "
                "environment the service should use (e.g. /opt/logllm/.venv/bin/logllm), installed with pip"
            )
        read_paths = tuple(
            PurePosixPath(path.resolve()) for path in (executable, Path(enricher.__file__).parent, DEFAULT_MODEL_DIR)
        )
        return cls(
            exec_start=PurePosixPath(executable),
            read_paths=read_paths,
            user_exists=_user_exists(user, root),
            systemd_running=Path("/run/systemd/system").is_dir(),
        )


def _user_exists(user: str, root: Path) -> bool:
    if root == Path("/"):
        try:
            pwd.getpwnam(user)
        except KeyError:
            return False
        return True
    passwd = root / "etc" / "passwd"
    return passwd.is_file() and any(line.split(":", 1)[0] == user for line in passwd.read_text().splitlines())


def plan_install(options: InstallOptions, host: Host) -> InstallPlan:
    """The files to write and commands to run for `options` on `host`.

    Raises:
        UserError: bad options (relative paths, an invalid user name).
    """
    for flag, path in (("--env-file", options.env_file), ("--unit-dir", options.unit_dir)):
        if not path.is_absolute():
            raise UserError(f"{flag} {str(path)!r} must be an absolute path")
    protect_home = protect_home_for(host.read_paths)
    unit_path = options.unit_dir / UNIT_NAME
    files_ = [
        PlannedFile(unit_path, render_unit(host.exec_start, options.env_file, options.user, protect_home), 0o644, True),
        PlannedFile(options.env_file, render_env_file(), 0o640, False, dir_mode=0o750),
    ]
    if options.gpu:
        files_.append(
            PlannedFile(options.unit_dir / f"{UNIT_NAME}.d" / GPU_DROPIN_NAME, _template(GPU_DROPIN_NAME), 0o644, True)
        )
    system: list[list[str]] = []
    if not host.user_exists:
        system.append(
            ["useradd", "--system", "--user-group", "--home-dir", str(STATE_DIR), "--no-create-home",
             "--shell", "/usr/sbin/nologin", "--comment", "LogLLM enrichment worker", options.user]
        )  # fmt: skip
    systemctl = [["systemctl", "daemon-reload"]]
    if options.enable:
        systemctl.append(["systemctl", "enable", "--now", UNIT_NAME])
    notes = []
    if protect_home != "yes":
        notes.append(
            "the code or model lives under /home or /root, so the unit uses ProtectHome=read-only; install into "
            "e.g. /opt/logllm to hide home directories from the service entirely"
        )
    if options.dry_run or options.root != Path("/"):
        return InstallPlan(files_, [], system + systemctl, notes)
    if not host.systemd_running:
        notes.append("systemd is not running as PID 1 here: run the systemctl commands above once it is")
        return InstallPlan(files_, system, systemctl, notes)
    return InstallPlan(files_, system + systemctl, [], notes)


# ---------------------------------------------------------------------------------------------
# Doing it.


def _under(root: Path, path: PurePosixPath) -> Path:
    return root / path.relative_to("/")


def write_files(plan: InstallPlan, root: Path) -> list[str]:
    """Write the plan's files under `root`; returns one line per file saying what happened.

    Raises:
        UserError: a file cannot be written (naming it and the fix).
    """
    report = []
    for planned in plan.files:
        target = _under(root, planned.path)
        if target.exists() and not planned.overwrite:
            report.append(f"kept     {target} (already there; delete it to get a fresh template)")
            continue
        try:
            if not target.parent.is_dir():
                target.parent.mkdir(parents=True)
                if planned.dir_mode is not None:
                    target.parent.chmod(planned.dir_mode)
            # Create with the final mode, so a secret-bearing file is never briefly world-readable.
            descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, planned.mode)
            with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                handle.write(planned.content)
            target.chmod(planned.mode)
        except OSError as error:
            raise UserError(
                f"cannot write {target}: {error.strerror}; run as root, or add --root DIR to write the files elsewhere"
            ) from None
        report.append(f"wrote    {target} (mode {planned.mode:04o})")
    return report


Runner = Callable[[list[str]], int]


def _run(command: list[str]) -> int:
    return subprocess.run(command, check=False).returncode


def install(
    options: InstallOptions,
    host: Host,
    *,
    euid: int,
    run: Runner = _run,
    out: Callable[[str], None] = print,
) -> InstallPlan:
    """Carry out `plan_install(options, host)`: write the files, then run or print the commands.

    Raises:
        UserError: not root without --dry-run, a file that cannot be written, or a failed command.
    """
    if not options.dry_run and euid != 0:
        raise UserError(
            "installing a system service writes /etc and creates a system user: run it as root "
            "(e.g. `sudo $(command -v logllm) systemd install`), or add --dry-run to see what it would do"
        )
    plan = plan_install(options, host)
    for line in write_files(plan, options.root):
        out(line)
    execute_commands(plan, run, out, dry_run=options.dry_run)
    return plan


def execute_commands(plan: InstallPlan, run: Runner, out: Callable[[str], None], dry_run: bool = False) -> None:
    """Run the plan's commands in order, print the deferred ones, then the notes.

    Raises:
        UserError: a command failed (the ones after it are not run).
    """
    for command in plan.commands:
        out(f"running  {shlex.join(command)}")
        code = run(command)
        if code != 0:
            raise UserError(f"`{shlex.join(command)}` failed with exit code {code}; see its message above")
    if plan.deferred:
        out("commands (not run: --dry-run):" if dry_run else "commands to run:")
        for command in plan.deferred:
            out(f"  {shlex.join(command)}")
    for note in plan.notes:
        out(f"note: {note}")
