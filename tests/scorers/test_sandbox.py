"""The sandbox's verdict and boundary: a pass is the checker's token, the OS holds the code in.

Hostile responses one by one are in test_sandbox_hostile.py.
"""

from __future__ import annotations

import pytest

from curation.scorers import SCORERS
from curation.scorers.sandbox import SandboxLimits, SandboxUnavailable, run_tests, sandbox_python

LIMITS = SandboxLimits(timeout_s=3, memory_mb=512)
TESTS = "def check(candidate):\n    assert candidate([3, 1, 2]) == (1, 2, 3)\n    assert candidate([]) == ()\n"


def test_right_code_passes_and_wrong_code_fails_with_the_failed_assert():
    ok = run_tests("def sort(xs):\n    return tuple(sorted(xs))\n", TESTS, "sort", limits=LIMITS)
    assert ok.status == "passed" and ok.reason == "", ok
    bad = run_tests("def sort(xs):\n    return tuple(xs)\n", TESTS, "sort", limits=LIMITS)
    assert bad.status == "failed"
    assert "tests.py line 2: assert candidate([3, 1, 2]) == (1, 2, 3)" in bad.reason


def test_results_cross_as_exact_types():
    # a list is not the tuple the tests expect, even though it prints alike
    res = run_tests("def sort(xs):\n    return sorted(xs)\n", TESTS, "sort", limits=LIMITS)
    assert res.status == "failed"


def test_plain_asserts_naming_functions_and_the_prompts_helpers():
    stub = "def double(x):\n    return 2 * x\n\ndef quad(x):\n"
    # the response redefines the prompt's helper (for itself too): the checks keep the prompt's own
    solution = stub + "    return double(double(x))\n\ndef double(x):\n    return 2 * x if x != 3 else 0\n"
    res = run_tests(solution, "assert double(3) == 6\nassert quad(1) == 4\n", "quad", stub=stub, limits=LIMITS)
    assert res.status == "passed", res
    res = run_tests("def f(x):\n    return x\n", "assert f(2) == 3\n", None, limits=LIMITS)
    assert res.status == "failed" and "AssertionError" in res.reason


def test_an_exception_the_tests_expect_crosses_as_its_builtin_type():
    tests = "try:\n    f(-1)\n    raise AssertionError('no error')\nexcept ValueError:\n    pass\n"
    res = run_tests("def f(x):\n    if x < 0:\n        raise ValueError('negative')\n", tests, None, limits=LIMITS)
    assert res.status == "passed", res


def test_a_missing_entry_point_or_a_syntax_error_fails_with_a_reason():
    res = run_tests("def other():\n    pass\n", TESTS, "sort", limits=LIMITS)
    assert res.status == "failed" and "does not define 'sort'" in res.reason
    res = run_tests("def sort(xs)\n    return xs\n", TESTS, "sort", limits=LIMITS)
    assert res.status == "failed" and "SyntaxError" in res.reason


def test_network_namespace_has_only_loopback():
    code = "print(sorted(l.split(':')[0].strip() for l in open('/proc/net/dev').read().splitlines()[2:]))\ndef f():\n    pass\n"
    res = run_tests(code, "assert f() is None\n", None, limits=LIMITS)
    assert res.status == "passed" and res.stdout.strip() == "['lo']"
    assert {"netns", "pidns", "userns", "uid_65534"} <= set(res.isolation)


def test_runs_as_an_unprivileged_user_with_no_capabilities_and_a_read_only_system():
    code = (
        "import os\nstatus = open('/proc/self/status').read()\n"
        "print(os.getuid(), [l.split()[1] for l in status.splitlines() if l.startswith('CapEff')][0])\n"
        "print(sorted(os.listdir('/')))\n"
        "try:  # a path relative to a directory fd slips past the audit hook; the mount does not\n"
        "    os.open('x', os.O_CREAT | os.O_WRONLY, dir_fd=os.open('/usr', os.O_RDONLY))\n"
        "except OSError as e:\n    print('usr:', e.strerror)\n"
        "def f():\n    pass\n"
    )
    res = run_tests(code, "f()\n", None, limits=LIMITS)
    uid_caps, root, usr = res.stdout.splitlines()
    assert uid_caps == "65534 0000000000000000"
    assert "etc" not in root and "root" not in root and "home" not in root and "work" in root
    assert usr == "usr: Read-only file system"


def test_without_bubblewrap_code_is_refused_not_run_unconfined(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH with no bwrap on it
    sandbox_python.cache_clear()
    try:
        with pytest.raises(SandboxUnavailable, match="bubblewrap"):
            run_tests("def f():\n    pass\n", "f()\n", None, limits=LIMITS)
        with pytest.raises(SandboxUnavailable, match="apt-get install bubblewrap"):
            SCORERS.build("verify", {"name": "v", "kind": "verify", "task": "code"})
        # math needs no sandbox
        SCORERS.build("verify", {"name": "v", "kind": "verify", "task": "math"})
    finally:
        sandbox_python.cache_clear()
