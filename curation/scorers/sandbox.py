"""Run untrusted Python (model-written code) against trusted tests, confined by the operating system.

The boundary is bubblewrap (`bwrap`, Debian package `bubblewrap`, installed by scripts/setup.sh):
- an unprivileged uid (65534) in its own user, pid, mount, network, IPC and UTS namespaces; as
  root the host drops to that uid before starting bwrap, so process limits apply (the kernel
  exempts uid 0 from RLIMIT_NPROC);
- a read-only view of /usr only (no /etc, /home, /root, /work or the repository), a private
  tmpfs as the only writable place (/work, size-limited), an empty environment, no network
  but loopback, no capabilities;
- rlimits set before the response loads: address space, CPU seconds, file size, processes,
  open files, no core files;
- on timeout the host kills bwrap's process group; bwrap dies with its parent and the pid
  namespace takes every process of the run with it (a `setsid` child included).

Without bwrap (or when it cannot create namespaces here) `SandboxUnavailable` is raised:
model-written code is never run unconfined.

Verdict: inside, a checker process runs the tests and the response runs in a separate worker
process (see `_sandbox_harness`). A pass is the per-run random token the checker writes to a
file the response never holds, after every check returned; the exit status, stdout and
anything the response prints count for nothing.
"""

from __future__ import annotations

import functools
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from curation.scorers._sandbox_harness import REFUSED
from curation.scorers.base import ScorerError

HARNESS = Path(__file__).with_name("_sandbox_harness.py").read_text(encoding="utf-8")
SANDBOX_UID = 65534  # nobody
ISOLATION = ["bwrap", "uid_65534", "userns", "pidns", "netns", "mountns", "readonly_usr", "tmpfs_work", "rlimits", "no_env"]


class SandboxUnavailable(ScorerError):
    """No OS isolation on this machine: code is not run at all."""


@dataclass
class SandboxLimits:
    timeout_s: float = 10.0  # wall clock for the whole run
    memory_mb: int = 1024  # address space per process
    cpu_s: int | None = None  # CPU seconds per process; default: the timeout rounded up, plus one
    max_processes: int = 8  # in the sandbox's user namespace (bwrap's init, checker and worker count)
    max_file_mb: int = 16  # any one file, stdout and stderr included
    max_open_files: int = 64
    work_mb: int = 64  # size of the writable tmpfs


@dataclass
class SandboxResult:
    status: str  # passed | failed | timeout | cpu_limit | memory | file_limit | refused | exited
    reason: str  # why it did not pass ("" when it did)
    returncode: int | None  # of the sandbox (the checker); says nothing about the verdict
    stdout: str
    stderr: str
    seconds: float
    isolation: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def _readable_by_sandbox(path: Path) -> bool:
    """Every folder above `path` searchable by others (bwrap binds it as the sandbox uid)."""
    return all(p.stat().st_mode & 0o001 for p in path.parents)


def _interpreters() -> list[Path]:
    found = [Path(sys.base_prefix) / "bin" / f"python{sys.version_info[0]}.{sys.version_info[1]}"]
    found += [Path("/usr/bin/python3"), Path("/usr/local/bin/python3")]
    return [p for p in found if p.is_file()]


def _bwrap_command(python: Path) -> list[str]:
    tool = shutil.which("bwrap")
    if tool is None:
        raise SandboxUnavailable("bubblewrap (bwrap) is not installed")
    cmd = [
        tool, "--unshare-user", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
        "--unshare-cgroup-try", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID),
        "--die-with-parent", "--new-session", "--clearenv",
        "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "LANG", "C.UTF-8", "--setenv", "HOME", "/work",
        "--ro-bind", "/usr", "/usr",
    ]
    for name in ("bin", "lib", "lib64", "sbin"):
        target = Path("/") / name
        if target.is_symlink():
            cmd += ["--symlink", os.readlink(target), f"/{name}"]
        elif target.is_dir():
            cmd += ["--ro-bind", str(target), f"/{name}"]
    prefix = python.parent.parent
    if not str(prefix).startswith("/usr/"):
        cmd += ["--ro-bind", str(prefix), str(prefix)]
    return cmd + ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]


def _drop_privileges() -> dict[str, Any]:
    """Popen arguments that start bwrap as the sandbox uid when we are root."""
    if os.geteuid() != 0:
        return {}
    return {"user": SANDBOX_UID, "group": SANDBOX_UID, "extra_groups": []}


@functools.lru_cache(maxsize=1)
def sandbox_python() -> tuple[tuple[str, ...], str]:
    """(bwrap command prefix, interpreter) that work here; SandboxUnavailable otherwise."""
    problems = []
    for python in _interpreters():
        if os.geteuid() == 0 and not _readable_by_sandbox(python):
            problems.append(f"{python}: not readable by uid {SANDBOX_UID}")
            continue
        try:
            cmd = _bwrap_command(python)
        except SandboxUnavailable as exc:
            problems.append(str(exc))
            break
        probe = subprocess.run(
            [*cmd, "--", str(python), "-I", "-S", "-c", "import json, resource, ctypes, subprocess"],
            capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"}, timeout=30, check=False,
            **_drop_privileges(),
        )
        if probe.returncode == 0:
            return tuple(cmd), str(python)
        problems.append(f"{python}: {probe.stderr.strip()[-300:] or f'exit {probe.returncode}'}")
    raise SandboxUnavailable(
        "no OS sandbox for model-written code, so none is run: "
        + "; ".join(problems or ["no Python interpreter found"])
        + ". Install bubblewrap (`apt-get install bubblewrap`, or scripts/setup.sh) on a host that allows user namespaces"
    )


def check_available() -> None:
    """Raise SandboxUnavailable now (when a scorer is built) rather than on the first row."""
    sandbox_python()


def _rlimits(limits: SandboxLimits) -> dict[str, int]:
    return {
        "RLIMIT_AS": limits.memory_mb * 2**20,
        "RLIMIT_CPU": limits.cpu_s or int(limits.timeout_s) + 1,
        "RLIMIT_FSIZE": limits.max_file_mb * 2**20,
        "RLIMIT_NPROC": limits.max_processes,
        "RLIMIT_NOFILE": limits.max_open_files,
        "RLIMIT_CORE": 0,
    }


def _tail(f: IO[bytes], limit: int = 20000) -> str:
    f.seek(0, os.SEEK_END)
    f.seek(max(0, f.tell() - limit))
    return f.read().decode("utf-8", "replace")


def run_tests(
    solution: str, tests: str, entry_point: str | None = None, stub: str = "", limits: SandboxLimits | None = None
) -> SandboxResult:
    """Run `tests` against the functions `solution` defines; never raises for what the code does.

    `tests` may define `check(candidate)` (HumanEval; called with `entry_point`) or be plain
    asserts naming the response's functions. `stub` (the prompt's code) is trusted: helpers it
    defines stay the prompt's own in the checks, whatever the response redefines.
    """
    limits = limits or SandboxLimits()
    prefix, python = sandbox_python()
    token = secrets.token_hex(16)
    job = {
        "solution": solution, "tests": tests, "entry_point": entry_point, "stub": stub, "token": token,
        "harness": HARNESS, "rlimits": _rlimits(limits),
    }
    # job and verdict travel in unlinked files: nothing in the sandbox can open them by name,
    # and bwrap's init closes its copies, so only the checker holds them
    with tempfile.TemporaryFile() as job_f, tempfile.TemporaryFile() as verdict_f, \
            tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        job_f.write(json.dumps(job).encode())
        job_f.flush()
        job_f.seek(0)
        fds = (job_f.fileno(), verdict_f.fileno())
        cmd = [*prefix, "--size", str(limits.work_mb * 2**20), "--tmpfs", "/work", "--chdir", "/work", "--",
               python, "-I", "-S", "-c", HARNESS, "checker", *map(str, fds)]
        started = time.perf_counter()
        proc = subprocess.Popen(  # no preexec_fn: safe from many threads at once
            cmd,
            env={"PATH": "/usr/bin:/bin"},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            pass_fds=fds,
            start_new_session=True,
            close_fds=True,
            **_drop_privileges(),
        )
        timed_out = False
        rc: int | None = None
        try:
            rc = proc.wait(timeout=limits.timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
        _kill_group(proc.pid)
        if timed_out:
            rc = proc.wait()
        seconds = time.perf_counter() - started
        verdict_f.seek(0)
        raw = verdict_f.read(65536)
        stdout, stderr = _tail(out), _tail(err)
    status, reason = _verdict(raw, token, timed_out, limits, stderr)
    return SandboxResult(status, reason, rc, stdout, stderr, seconds, [*ISOLATION, f"python:{python}"])


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


_SIGNALS = {-signal.SIGXCPU: "cpu_limit", -signal.SIGXFSZ: "file_limit"}


def _verdict(raw: bytes, token: str, timed_out: bool, limits: SandboxLimits, stderr: str) -> tuple[str, str]:
    """(status, reason) from the checker's verdict: a pass needs this run's token, nothing else."""
    if timed_out:
        return "timeout", f"still running after the {limits.timeout_s:g} s wall-clock limit (process tree killed)"
    try:
        outcome = json.loads(raw) if raw else {}
    except ValueError:
        outcome = {}
    if isinstance(outcome, dict) and outcome.get("token") == token:
        return "passed", ""
    if not isinstance(outcome, dict) or "failed" not in outcome:
        return "failed", "the checker ended without a verdict"
    reason, exit_code = str(outcome["failed"]), outcome.get("worker_exit")
    refusals = [line for line in stderr.splitlines() if line.startswith(REFUSED)]
    if refusals:
        return "refused", f"{refusals[0][len(REFUSED):].strip()}; {reason}"
    if exit_code in _SIGNALS:
        return _SIGNALS[exit_code], f"the response's process was killed by signal {-exit_code}; {reason}"
    if "File too large" in reason or "File too large" in stderr[-2000:]:  # Python ignores SIGXFSZ: EFBIG
        return "file_limit", f"a file (stdout included) reached the {limits.max_file_mb} MB limit; {reason}"
    if "MemoryError" in reason or "MemoryError" in stderr[-2000:]:
        return "memory", f"over the {limits.memory_mb} MB memory limit; {reason}"
    if outcome.get("worker_gone") and isinstance(exit_code, int):
        how = f"exited with status {exit_code}" if exit_code >= 0 else f"was killed by signal {-exit_code}"
        return "exited", f"the response's process {how} before the checks finished; {reason}"
    return "failed", reason
