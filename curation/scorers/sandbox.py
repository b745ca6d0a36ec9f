"""Run untrusted Python (model-written code and its tests) in a confined subprocess.

Layers, each reported in `SandboxResult.isolation`:
- a fresh temporary working directory, deleted afterwards; stdout/stderr go to files in it;
- resource limits, set by the child itself before the code runs (no preexec_fn, so threads may
  run sandboxes concurrently): address space (RLIMIT_AS), CPU seconds (RLIMIT_CPU), file size
  (RLIMIT_FSIZE), process count (RLIMIT_NPROC; the kernel does not apply it to root), no core;
- a wall-clock timeout that kills the whole process group (own session);
- a private, empty network namespace when the host allows it (`unshare --net`, as root);
- an audit hook (PEP 578) installed before the code runs that refuses sockets, fork / exec /
  subprocess, ctypes, signals to other processes, and any write, rename, delete or mkdir
  outside the working directory. Each refusal is written to stderr and makes the status
  `refused`, even if the code catches the PermissionError;
- `python -I -S`: isolated mode, no site-packages, no PYTHON* variables, a minimal environment.

An audit hook is not a security boundary on its own (see PEP 578); with the limits and the
namespace it stops the usual accidents and hostile snippets (loops, fork bombs, huge
allocations, stray writes, network calls). Run really adversarial code in a VM or container.
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field

REFUSED = "[sandbox] refused"

# Runs first in the child: installs the audit hook, then executes main.py from the work dir.
_GUARD = r"""
import os, resource, sys
ROOT = os.path.realpath(sys.argv[1])
for name, value in zip(("RLIMIT_AS", "RLIMIT_CPU", "RLIMIT_FSIZE", "RLIMIT_NPROC", "RLIMIT_CORE"), sys.argv[2:7]):
    limit = int(value)
    hard = limit + 1 if name == "RLIMIT_CPU" else limit  # SIGXCPU at the soft limit, SIGKILL one second later
    resource.setrlimit(getattr(resource, name), (limit, hard))
ALLOWED = {"/dev/null"}
BLOCKED = ("socket.", "os.fork", "os.forkpty", "os.system", "os.exec", "os.spawn", "os.posix_spawn",
           "subprocess.Popen", "os.kill", "os.killpg", "ctypes.", "pty.", "os.setuid", "os.setgid",
           "os.chroot", "resource.setrlimit", "resource.prlimit", "sys.remote_exec")
PATH_EVENTS = {"os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.symlink", "os.link", "os.chmod",
               "os.chown", "os.truncate", "os.utime", "shutil.rmtree", "shutil.move", "shutil.copyfile",
               "os.chdir", "os.removexattr", "os.setxattr"}
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_write = os.write

def inside(path):
    if isinstance(path, int):
        return True
    try:
        p = os.path.realpath(os.fsdecode(path))
    except Exception:
        return False
    return p == ROOT or p.startswith(ROOT + os.sep) or p in ALLOWED

def refuse(what):
    _write(2, ("%s %s\n" % (%(marker)r, what)).encode("utf-8", "replace"))
    raise PermissionError("sandbox refused: " + what)

def hook(event, args):
    if event == "open":
        path, mode, flags = args
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or bool((flags or 0) & WRITE_FLAGS)
        if writing and not inside(path):
            refuse("write to %r" % (path,))
    elif event in PATH_EVENTS:
        for a in args:
            if isinstance(a, (str, bytes, os.PathLike)) and not inside(a):
                refuse("%s %r" % (event, a))
    elif event.startswith(BLOCKED):
        refuse(event)
    elif event == "import" and args and args[0] in ("ctypes", "_ctypes"):
        refuse("import " + args[0])

os.chdir(ROOT)
with open("main.py", encoding="utf-8") as f:
    source = f.read()
sys.addaudithook(hook)
sys.argv = ["main.py"]
sys.path.insert(0, ROOT)
exec(compile(source, "main.py", "exec"), {"__name__": "__main__", "__file__": "main.py"})
""".replace("%(marker)r", repr(REFUSED))


@dataclass
class SandboxLimits:
    timeout_s: float = 10.0
    memory_mb: int = 1024
    cpu_s: int | None = None  # default: the timeout rounded up, plus one
    max_processes: int = 64
    max_file_mb: int = 16
    network: bool = False


@dataclass
class SandboxResult:
    status: str  # passed | failed | timeout | cpu_limit | memory | refused | error
    returncode: int | None
    stdout: str
    stderr: str
    seconds: float
    isolation: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def to_dict(self, tail: int = 2000) -> dict:
        d = asdict(self)
        d["stdout"], d["stderr"] = self.stdout[-tail:], self.stderr[-tail:]
        return d


@functools.lru_cache(maxsize=1)
def _netns_prefix() -> tuple[str, ...]:
    """`unshare --net --` when this host can give the child a private network namespace."""
    tool = shutil.which("unshare")
    if not sys.platform.startswith("linux") or os.geteuid() != 0 or tool is None:
        return ()
    probe = subprocess.run([tool, "--net", "--", "true"], check=False, capture_output=True)
    return (tool, "--net", "--") if probe.returncode == 0 else ()


def _limits_args(limits: SandboxLimits) -> list[str]:
    cpu = limits.cpu_s or int(limits.timeout_s) + 1
    return [str(v) for v in (limits.memory_mb * 2**20, cpu, limits.max_file_mb * 2**20, limits.max_processes, 0)]


def _tail(path: str, limit: int = 20000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - limit))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def run_python(code: str, limits: SandboxLimits | None = None) -> SandboxResult:
    """Run `code` as a script in the sandbox; never raises for what the code does."""
    limits = limits or SandboxLimits()
    netns = () if limits.network else _netns_prefix()
    isolation = ["tempdir", "rlimits", "process_group", "audit_hook", "isolated_python"]
    if netns:
        isolation.append("netns")
    if os.geteuid() != 0:
        isolation.append("nproc")
    work = tempfile.mkdtemp(prefix="curate-sandbox-")
    try:
        with open(os.path.join(work, "main.py"), "w", encoding="utf-8") as f:
            f.write(code)
        out_path, err_path = os.path.join(work, ".stdout"), os.path.join(work, ".stderr")
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": work, "TMPDIR": work}
        started = time.perf_counter()
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            proc = subprocess.Popen(  # no preexec_fn: safe to call from many threads at once
                [*netns, sys.executable, "-I", "-S", "-c", _GUARD, work, *_limits_args(limits)],
                cwd=work,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
                close_fds=True,
            )
            timed_out = False
            try:
                rc = proc.wait(timeout=limits.timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
            _kill_group(proc.pid)  # also reaps anything the code left behind
            if timed_out:
                rc = proc.wait()
        seconds = time.perf_counter() - started
        stdout, stderr = _tail(out_path), _tail(err_path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return SandboxResult(_status(rc, timed_out, stderr), rc, stdout, stderr, seconds, isolation)


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _status(rc: int | None, timed_out: bool, stderr: str) -> str:
    if REFUSED in stderr:
        return "refused"
    if timed_out:
        return "timeout"
    if rc == 0:
        return "passed"
    if "MemoryError" in stderr:
        return "memory"
    if rc == -signal.SIGXCPU:
        return "cpu_limit"
    if rc == -signal.SIGXFSZ or "File too large" in stderr:
        return "file_limit"
    return "failed"
