"""Hostile responses, scored through the verify scorer: each is contained, scores 0 with a reason
on its row, leaves nothing on the host, and the other rows are scored all the same.

The task is `add(a, b)`; every hostile response is wrong unless its trick worked (an escape
that succeeded returns the right sum), so a 0 means the trick failed, and the reason says why.
All rows are scored in one call (two sandboxes at a time), then checked one by one.
"""

from __future__ import annotations

import json
import socket
import threading
import uuid
from pathlib import Path

import polars as pl
import pytest

from curation.scorers import SCORERS

TESTS = "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-4, 4) == 0\n"
STUB = 'def add(a: int, b: int) -> int:\n    """Sum of a and b."""\n'
MARK = uuid.uuid4().hex[:12]  # names this run's host-side targets and processes
SECRET = f"s3cret-{MARK}"

# Starts a program with _posixsubprocess.fork_exec: no audit event, so the audit hook never sees it.
SPAWN = """
import _posixsubprocess, os
def spawn(argv, setsid=False, stdout=-1):
    r, w = os.pipe()
    base = [argv, [os.fsencode(argv[0])], True, (), None, None, -1, -1, -1, stdout, -1, -1, r, w,
            True, setsid, -1, None, None, None, -1, None]
    for extra in ([], [False]):  # Python 3.12 adds allow_vfork
        try:
            return _posixsubprocess.fork_exec(*base, *extra)
        except TypeError:
            continue
    raise RuntimeError("fork_exec signature unknown")
"""


def relay(argv: str) -> str:
    """Start `argv` unhooked with its stdout on a pipe, and print its first line (waits for it)."""
    return (
        f"r, w = os.pipe()\nspawn({argv}, stdout=w)\nos.close(w)\n"
        "print(os.fdopen(r).readline().strip(), flush=True)"
    )


def wrong(body: str = "") -> str:
    return f"{body}\ndef add(a, b):\n    return a - b\n"


def if_escaped(attempt: str) -> str:
    """`add` is right only when `attempt` (indented code in add) ran without an error."""
    inner = "\n".join("    " + line for line in attempt.strip().splitlines())
    return f"import os, sys\ndef add(a, b):\n{inner}\n    return a + b\n"


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    """Host-side targets and a listening socket the responses try to reach."""
    root = tmp_path_factory.mktemp("hostile")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    server.settimeout(0.2)
    connections: list = []
    stop = threading.Event()

    def accept():
        while not stop.is_set():
            try:
                connections.append(server.accept())
            except OSError:
                pass

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield {"dir": root, "port": server.getsockname()[1], "connections": connections}
    stop.set()
    t.join()
    server.close()


def corpus(host) -> dict[str, tuple[str, set[str]]]:
    """name -> (response, statuses that count as contained)."""
    d, port = host["dir"], host["port"]
    target = lambda name: str(d / f"{name}-{MARK}")  # noqa: E731
    return {
        # the table
        "infinite_loop": ("def add(a, b):\n    while True:\n        pass\n", {"timeout"}),
        "os_fork": (wrong("import os\nos.fork()"), {"refused"}),
        "subprocess_run": (wrong("import subprocess\nsubprocess.run(['true'])"), {"refused"}),
        "socket": (if_escaped(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)"), {"refused"}),
        "allocate_4gb": (wrong("x = bytearray(4 * 1024**3)"), {"memory"}),
        "import_ctypes": (wrong("import ctypes"), {"refused"}),
        "fork_exec_binary": (
            SPAWN + if_escaped(f"spawn(['/usr/bin/touch', {target('fork-exec')!r}])\nimport time; time.sleep(0.3)\nassert os.path.exists({target('fork-exec')!r})"),
            {"failed"},
        ),
        "fork_exec_setsid_child": (
            SPAWN + wrong(f"spawn(['/usr/bin/sleep', '1037.{MARK[:4]}'], setsid=True)"),
            {"failed"},
        ),
        "timeout_leaves_a_setsid_child": (
            SPAWN + wrong(f"spawn(['/usr/bin/sleep', '1038.{MARK[:4]}'], setsid=True)\nwhile True:\n    pass"),
            {"timeout"},
        ),
        "too_many_open_files": (if_escaped("files = [open('/dev/null') for _ in range(100)]"), {"failed"}),
        "open_dir_fd": (
            if_escaped(f"d = os.open('/', os.O_RDONLY)\nos.close(os.open({target('dirfd')[1:]!r}, os.O_CREAT | os.O_WRONLY, dir_fd=d))"),
            {"failed"},
        ),
        "sqlite_elsewhere": (if_escaped(f"import sqlite3\nsqlite3.connect({target('db')!r}).execute('create table t (x)')"), {"failed"}),
        "audit_hook_frame_hack": (
            wrong("import sys\ntry:\n    sys._getframe(1).f_globals['refuse'] = lambda *a: None\nexcept Exception:\n    pass\nimport ctypes"),
            {"refused"},
        ),
        "sys_exit_0": (wrong() + "import sys\nsys.exit(0)\n", {"exited"}),
        "os_exit_0": (wrong() + "import os\nos._exit(0)\n", {"exited"}),
        "exit_0_inside_call": ("import os\ndef add(a, b):\n    os._exit(0)\n", {"exited"}),
        "excepthook_exits_0": (
            wrong("import os, sys\nsys.excepthook = lambda *a: os._exit(0)") + "raise ValueError('boom')\n",
            {"failed"},
        ),
        "read_etc_passwd": (if_escaped("open('/etc/passwd').read()"), {"failed"}),
        # the verdict
        "patched_sys_exit": (wrong("import sys\nsys.exit = lambda *a: None"), {"failed"}),
        "patched_assertion_error": (
            wrong("import builtins\nbuiltins.AssertionError = type('Quiet', (Exception,), {})"),
            {"failed"},
        ),
        "prints_token_format": (
            wrong(
                "import os\nfake = '{\"token\": \"' + 'a' * 32 + '\"}'\nprint(fake)\n"
                "for fd in range(3, 64):\n    try:\n        os.write(fd, fake.encode())\n    except OSError:\n        pass"
            ),
            {"failed", "exited"},  # exited: the fake reply broke the call protocol
        ),
        "eq_always_true": (
            "class Yes:\n    def __eq__(self, other):\n        return True\ndef add(a, b):\n    return Yes()\n",
            {"failed"},
        ),
        "int_subclass_eq": (
            "class Five(int):\n    def __eq__(self, other):\n        return True\n    __hash__ = int.__hash__\n"
            "def add(a, b):\n    return Five(0)\n",
            {"failed"},
        ),
        "kills_the_checker": (SPAWN + "import os\ndef add(a, b):\n    spawn(['/usr/bin/kill', '-9', str(os.getppid())])\n    import time; time.sleep(1)\n", {"failed", "exited"}),
        "reads_checker_memory": (if_escaped("open('/proc/%d/mem' % os.getppid(), 'rb').read(1)"), {"failed"}),
        # more
        "fork_bomb": (
            SPAWN
            + wrong(
                relay(
                    "['/usr/bin/python3', '-c', "
                    "'import os, sys\\nn = 0\\ntry:\\n    while True:\\n        if os.fork() == 0:\\n            import time; time.sleep(30); os._exit(0)\\n        n += 1\\nexcept OSError:\\n    print(\"forks:\", n, flush=True)\\n    import time; time.sleep(30)', "
                    f"'bomb-{MARK}']"
                )
            ),
            {"failed"},
        ),
        # through a directory fd the audit hook sees a relative name and lets these pass: the OS stops them
        "write_proc_self_root": (
            if_escaped(f"d = os.open('/proc/self/root/usr', os.O_RDONLY)\nos.close(os.open('pwned-{MARK}', os.O_CREAT | os.O_WRONLY, dir_fd=d))"),
            {"failed"},
        ),
        "write_proc_sys": (
            if_escaped("d = os.open('/proc/sys/kernel', os.O_RDONLY)\nos.write(os.open('hostname', os.O_WRONLY, dir_fd=d), b'pwned')"),
            {"failed"},
        ),
        "symlink_out_of_work": (
            SPAWN
            + if_escaped(
                f"os.symlink({target('symlink')!r}, 'link')\nspawn(['/usr/bin/touch', 'link'])\n"
                f"import time; time.sleep(0.3)\nassert os.path.exists({target('symlink')!r})"
            ),
            {"failed"},
        ),
        "environment_secrets": (
            if_escaped(
                "seen = str(dict(os.environ))\nfor p in os.listdir('/proc'):\n    try:\n        seen += open('/proc/%s/environ' % p).read()\n"
                "    except (OSError, ValueError):\n        pass\nprint(seen)\nassert 'CURATE_HOSTILE_SECRET' in seen"
            ),
            {"failed"},
        ),
        "network_without_the_hook": (
            SPAWN
            + wrong(
                relay(
                    "['/usr/bin/python3', '-c', 'import socket\\ntry:\\n    socket.create_connection((\"127.0.0.1\", "
                    f"{port}), timeout=1)\\n    print(\"net: connected\")\\nexcept OSError as e:\\n    print(\"net:\", e)']"
                )
            ),
            {"failed"},
        ),
        "huge_stdout": (wrong("import sys\nwhile True:\n    sys.stdout.write('x' * 65536)"), {"file_limit"}),
        "binary_stdout": (wrong("import sys\nsys.stdout.buffer.write(bytes(range(256)) * 64)\nsys.stdout.flush()"), {"failed"}),
    }


@pytest.fixture(scope="module")
def scored(host):
    import os

    os.environ["CURATE_HOSTILE_SECRET"] = SECRET
    try:
        rows = corpus(host)
        names = list(rows) + ["honest"]
        texts = [rows[n][0] for n in rows] + ["def add(a, b):\n    return a + b\n"]
        meta = json.dumps({"test": TESTS, "entry_point": "add", "prompt": STUB})
        frame = pl.DataFrame(
            {
                "candidate_id": names,
                "prompt_id": ["p"] * len(names),
                "messages": [[{"role": "user", "content": "add"}]] * len(names),
                "text": texts,
                "meta": [meta] * len(names),
            }
        )
        verify = SCORERS.build("verify", {"name": "v", "kind": "verify", "task": "code", "timeout_s": 3, "memory_mb": 512})
        out = verify.score(frame)
    finally:
        del os.environ["CURATE_HOSTILE_SECRET"]
    return {r["target_id"]: r for r in out.iter_rows(named=True)}, rows


def _processes_with(marker: str) -> list[str]:
    found = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
            except OSError:
                continue
            if marker in cmd:
                found.append(cmd)
    return found


NAMES = list(corpus({"dir": Path("/nonexistent"), "port": 1}))


@pytest.mark.parametrize("name", NAMES)
def test_hostile_response_is_contained_with_a_reason(scored, host, name):
    out, rows = scored
    row = out[name]
    detail = json.loads(row["detail"])
    assert row["value"] == 0.0, detail
    assert detail["status"] in rows[name][1], detail
    assert detail["reason"], detail
    # nothing reached the host
    assert not list(host["dir"].glob(f"*{MARK}*"))
    assert not list(Path("/usr").glob(f"pwned-{MARK}"))
    assert SECRET not in detail["stdout"] + detail["stderr"]


def test_the_honest_row_among_them_passes(scored):
    out, _ = scored
    assert out["honest"]["value"] == 1.0, out["honest"]["detail"]


def test_no_process_outlives_its_sandbox(scored):
    out, _ = scored
    assert _processes_with(f"1037.{MARK[:4]}") == []
    assert _processes_with(f"1038.{MARK[:4]}") == []  # left behind by a run killed on timeout
    assert _processes_with(f"bomb-{MARK}") == []


def test_fork_bomb_is_bounded_by_the_process_limit(scored):
    detail = json.loads(scored[0]["fork_bomb"]["detail"])
    forks = [line for line in detail["stdout"].splitlines() if line.startswith("forks:")]
    assert forks, detail
    assert int(forks[0].split()[1]) < 8  # SandboxLimits.max_processes


def test_no_connection_reached_the_host(scored, host):
    assert host["connections"] == []
    said = json.loads(scored[0]["network_without_the_hook"]["detail"])["stdout"]
    assert "net: " in said and "net: connected" not in said, said


def test_huge_output_is_cut_and_binary_output_is_kept_readable(scored):
    huge = json.loads(scored[0]["huge_stdout"]["detail"])
    assert len(huge["stdout"]) <= 500 and "16 MB limit" in huge["reason"]
    binary = json.loads(scored[0]["binary_stdout"]["detail"])
    assert "\ufffd" in binary["stdout"]  # undecodable bytes replaced, the row still written
