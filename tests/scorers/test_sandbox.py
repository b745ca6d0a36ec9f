"""Hostile snippets are stopped or refused and reported; the host is untouched."""

from __future__ import annotations

import os
import socket
import threading
import uuid
from pathlib import Path

import pytest

from curation.scorers.sandbox import REFUSED, SandboxLimits, run_python

LIMITS = SandboxLimits(timeout_s=3, memory_mb=512)


def test_plain_code_runs_and_passes_or_fails():
    ok = run_python("print(sum(range(10)))", LIMITS)
    assert ok.status == "passed" and ok.stdout.strip() == "45"
    bad = run_python("assert 1 == 2, 'nope'", LIMITS)
    assert bad.status == "failed" and "AssertionError: nope" in bad.stderr


def test_infinite_loop_is_stopped_by_the_timeout():
    res = run_python("while True:\n    pass", SandboxLimits(timeout_s=1.5))
    assert res.status == "timeout"
    assert res.seconds < 10


def test_fork_loop_is_refused_and_leaves_no_processes():
    res = run_python("import os\nwhile True:\n    os.fork()", LIMITS)
    assert res.status == "refused" and "os.fork" in res.stderr
    res = run_python("import subprocess\nsubprocess.run(['sleep', '100'])", LIMITS)
    assert res.status == "refused" and "subprocess.Popen" in res.stderr
    leftovers = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _cmdline(p).startswith("sleep 100")]
    assert leftovers == []


def _cmdline(p: Path) -> str:
    try:
        return (p / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_huge_allocation_hits_the_memory_limit():
    res = run_python("x = bytearray(8 * 1024**3)\nprint('allocated')", LIMITS)
    assert res.status == "memory" and "allocated" not in res.stdout


def test_write_outside_its_directory_is_refused(tmp_path):
    target = tmp_path / f"outside-{uuid.uuid4().hex}.txt"
    code = f"open({str(target)!r}, 'w').write('escaped')"
    res = run_python(code, LIMITS)
    assert res.status == "refused" and REFUSED in res.stderr
    assert not target.exists()
    # even when the code swallows the error, the refusal is reported
    sneaky = f"import os\ntry:\n    os.rename('main.py', {str(target)!r})\nexcept Exception:\n    pass\nprint('done')"
    res = run_python(sneaky, LIMITS)
    assert res.status == "refused" and "done" in res.stdout and not target.exists()
    # writing inside its own folder is fine, and the folder is gone afterwards
    res = run_python("import os\nopen('x.txt', 'w').write('ok')\nprint(os.getcwd())", LIMITS)
    assert res.status == "passed" and not Path(res.stdout.strip()).exists()


def test_opening_a_socket_is_refused():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.2)
    port = server.getsockname()[1]
    connected = threading.Event()

    def accept():
        try:
            server.accept()
            connected.set()
        except OSError:
            pass

    t = threading.Thread(target=accept)
    t.start()
    res = run_python(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)", LIMITS)
    t.join()
    server.close()
    assert res.status == "refused" and "socket" in res.stderr
    assert not connected.is_set()


@pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root here")
def test_network_namespace_has_only_loopback():
    res = run_python("print(open('/proc/net/dev').read())", LIMITS)
    assert "netns" in res.isolation
    ifaces = {line.split(":")[0].strip() for line in res.stdout.splitlines()[2:] if ":" in line}
    assert ifaces == {"lo"}
