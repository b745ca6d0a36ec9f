"""Runs inside the sandbox (stdlib only, `python -I -S`): the checker and the worker.

Two processes, so that the code under test never shares an interpreter with the checks:
- the checker (`checker JOB_FD VERDICT_FD`) reads its job from a file the host unlinked before
  starting the sandbox, makes itself non-dumpable (no ptrace, no /proc/<pid>/mem or fd
  access by the same uid), starts the worker and runs the tests itself. Each call of a function
  the response defines goes to the worker as plain data and its result comes back as plain data
  (exact built-in types, rebuilt here), so an object with a rigged `__eq__` cannot reach a
  comparison. Only when every check returned does the checker write the run's token to the
  verdict file, which the worker never holds; the host counts a pass only when it reads that token back.
- the worker (`worker` argument) sets an audit hook (a second layer that names what the code
  tried; the operating system is the boundary), loads the response from /work/solution.py, then
  answers call requests on two pipes until the checker closes them.
"""

import json
import os
import sys

REFUSED = "[sandbox] refused"
MAX_MESSAGE = 16 * 2**20  # bytes of one call's arguments or result


# ---------------------------------------------------------------- plain data across the boundary


def encode(x, depth=0):
    """JSON-able form of plain data; exact built-in types only (no subclasses, no custom objects)."""
    if depth > 100:
        raise TypeError("value nested too deeply")
    t = type(x)
    if x is None or t in (bool, int, str):
        return x
    if t is float:
        return {"float": repr(x)}
    if t is list:
        return [encode(v, depth + 1) for v in x]
    if t in (tuple, set, frozenset):
        return {t.__name__: [encode(v, depth + 1) for v in x]}
    if t is dict:
        return {"dict": [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in x.items()]}
    if t is bytes:
        return {"bytes": x.hex()}
    if t is complex:
        return {"complex": [repr(x.real), repr(x.imag)]}
    raise TypeError("a value of type %r is not plain data (built-in types only)" % t.__name__)


def decode(x):
    if x is None or type(x) in (bool, int, str):
        return x
    if type(x) is list:
        return [decode(v) for v in x]
    (tag, v), = x.items()
    if tag == "float":
        return float(v)
    if tag == "tuple":
        return tuple(decode(i) for i in v)
    if tag == "set":
        return {decode(i) for i in v}
    if tag == "frozenset":
        return frozenset(decode(i) for i in v)
    if tag == "dict":
        return {decode(k): decode(val) for k, val in v}
    if tag == "bytes":
        return bytes.fromhex(v)
    if tag == "complex":
        return complex(float(v[0]), float(v[1]))
    raise ValueError("unknown tag %r" % tag)


def send(fd, message):
    data = json.dumps(message).encode()
    if len(data) > MAX_MESSAGE:
        raise ValueError("message of %d bytes exceeds the limit of %d" % (len(data), MAX_MESSAGE))
    data = len(data).to_bytes(8, "big") + data
    while data:
        data = data[os.write(fd, data):]


def receive(fd):
    head = _read_exactly(fd, 8)
    size = int.from_bytes(head, "big")
    if size > MAX_MESSAGE:
        raise ValueError("message of %d bytes exceeds the limit of %d" % (size, MAX_MESSAGE))
    return json.loads(_read_exactly(fd, size))


def _read_exactly(fd, n):
    parts, left = [], n
    while left:
        chunk = os.read(fd, min(left, 2**20))
        if not chunk:
            raise EOFError("the other side closed the channel")
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


# ---------------------------------------------------------------- checker


class WorkerGone(Exception):
    """The response's process ended or broke the protocol before the checks finished."""


class ResponseBroken(Exception):
    """The response does not load, or lacks the function under test."""


def checker(job_fd, verdict_fd):
    import builtins
    import ctypes
    import resource
    import subprocess

    ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE = 0
    with os.fdopen(job_fd, "rb") as f:
        job = json.loads(f.read())
    verdict = os.fdopen(verdict_fd, "w")
    for name, value in job["rlimits"].items():
        resource.setrlimit(getattr(resource, name), (value, value + 1 if name == "RLIMIT_CPU" else value))
    with open("/work/solution.py", "w", encoding="utf-8") as f:
        f.write(job["solution"])

    req_r, req_w = os.pipe()
    resp_r, resp_w = os.pipe()
    worker = subprocess.Popen(
        [sys.executable, "-I", "-S", "-c", job["harness"], "worker", str(req_r), str(resp_w)],
        cwd="/work",
        stdin=subprocess.DEVNULL,
        pass_fds=(req_r, resp_w),
        close_fds=True,
    )
    os.close(req_r)
    os.close(resp_w)

    def call(name, args, kwargs):
        send(req_w, {"call": name, "args": encode(list(args)), "kwargs": encode(kwargs)})
        try:
            reply = receive(resp_r)
            if "ok" in reply:
                return decode(reply["ok"])
            kind, message = reply["raised"]
            kind, message = str(kind), str(message)
        except Exception as exc:  # closed, or not the protocol: either way no result
            raise WorkerGone("the response's process stopped answering (%s: %s)" % (type(exc).__name__, exc)) from None
        cls = getattr(builtins, kind, None)
        if not (isinstance(cls, type) and issubclass(cls, Exception)):
            cls = RuntimeError
        raise cls("%s (raised by the response)" % message)

    def proxy(name):
        def candidate(*args, **kwargs):
            return call(name, args, kwargs)

        candidate.__name__ = name
        return candidate

    outcome = {}
    try:
        try:
            hello = receive(resp_r)
            if "load_error" not in hello:
                functions = [str(f) for f in hello["functions"]]
        except Exception as exc:
            raise WorkerGone("the response's process ended while loading (%s: %s)" % (type(exc).__name__, exc)) from None
        if "load_error" in hello:
            if str(hello["load_error"]).startswith("SystemExit"):
                raise WorkerGone("the response exited while loading (%s)" % hello["load_error"])
            raise ResponseBroken("loading the response failed: %s" % hello["load_error"])
        namespace = {"__name__": "checks"}
        # the prompt's own helpers (trusted, like the tests) stay the prompt's; a stub that ends
        # in a bare signature gets a body so its helpers still load
        for stub in (job["stub"], job["stub"] + "\n    pass\n") if job["stub"] else ():
            try:
                exec(compile(stub, "stub.py", "exec"), namespace)
                break
            except Exception:
                namespace = {"__name__": "checks"}
        for name in functions:
            if name not in namespace or name == job["entry_point"]:
                namespace[name] = proxy(name)
        entry = job["entry_point"]
        if entry and entry not in functions:
            raise ResponseBroken("the response does not define %r" % entry)
        exec(compile(job["tests"], "tests.py", "exec"), namespace)
        if entry and callable(namespace.get("check")):
            namespace["check"](namespace[entry])
        outcome["token"] = job["token"]
    except WorkerGone as exc:
        outcome.update(failed=str(exc), worker_gone=True)
    except ResponseBroken as exc:
        outcome["failed"] = str(exc)
    except BaseException as exc:  # a failed assertion, or anything else the checks raised
        import traceback

        lines = job["tests"].splitlines()
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == "tests.py"]
        where = ""
        if frames and 0 < frames[-1].lineno <= len(lines):
            where = " at tests.py line %d: %s" % (frames[-1].lineno, lines[frames[-1].lineno - 1].strip()[:200])
        outcome["failed"] = "%s: %s%s" % (type(exc).__name__, str(exc)[:300], where)
    os.close(req_w)
    try:
        code = worker.wait(timeout=1)
    except subprocess.TimeoutExpired:
        worker.kill()
        code = worker.wait()
    outcome["worker_exit"] = code
    verdict.write(json.dumps(outcome))
    verdict.close()


# ---------------------------------------------------------------- worker


def worker(req_fd, resp_fd):
    root = "/work"
    write = os.write

    def refuse(what):
        write(2, ("%s %s\n" % (REFUSED, what)).encode("utf-8", "replace"))
        raise PermissionError("sandbox refused: " + what)

    blocked = ("socket.", "os.fork", "os.forkpty", "os.system", "os.exec", "os.spawn", "os.posix_spawn",
               "subprocess.Popen", "os.kill", "os.killpg", "ctypes.", "pty.", "os.setuid", "os.setgid",
               "os.chroot", "resource.setrlimit", "resource.prlimit", "sys.remote_exec")
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

    def inside(path):
        if isinstance(path, int):
            return True
        try:
            p = os.path.realpath(os.fsdecode(path))
        except Exception:
            return False
        return p == root or p.startswith(root + os.sep) or p == "/dev/null"

    def hook(event, args):
        if event == "open":
            path, mode, flags = args
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or bool((flags or 0) & write_flags)
            if writing and not inside(path):
                refuse("write to %r" % (path,))
        elif event.startswith(blocked):
            refuse(event)
        elif event == "import" and args and args[0] in ("ctypes", "_ctypes"):
            refuse("import " + args[0])

    with open(os.path.join(root, "solution.py"), encoding="utf-8") as f:
        source = f.read()
    module = {"__name__": "solution", "__file__": "solution.py"}
    sys.addaudithook(hook)
    sys.argv = ["solution.py"]
    sys.path.insert(0, root)
    try:
        exec(compile(source, "solution.py", "exec"), module)
        functions = [k for k, v in module.items() if callable(v) and not isinstance(v, type) and not k.startswith("__")]
        hello = {"functions": functions}
    except BaseException as exc:
        hello = {"load_error": "%s: %s" % (type(exc).__name__, str(exc)[:300])}
    send(resp_fd, hello)
    if "load_error" in hello:
        return
    while True:
        try:
            request = receive(req_fd)
        except EOFError:
            return
        try:
            result = module[request["call"]](*decode(request["args"]), **decode(request["kwargs"]))
            reply = {"ok": encode(result)}
        except BaseException as exc:
            reply = {"raised": [type(exc).__name__, str(exc)[:300]]}
        send(resp_fd, reply)


if __name__ == "__main__":
    if sys.argv[1:2] == ["worker"]:
        worker(int(sys.argv[2]), int(sys.argv[3]))
    else:
        checker(int(sys.argv[2]), int(sys.argv[3]))
