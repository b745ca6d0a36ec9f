"""vLLM's OpenAI-compatible server for tests: started on 127.0.0.1 on a free port, stopped by PID.

    from tests.servers import shared_vllm_server
    server = shared_vllm_server(tiny_chat)          # starts once per test process, waits until it answers
    GENERATORS.build("openai", {"model": server.model, "base_url": server.base_url})

`shared_vllm_server(model, wait=False)` launches without waiting, so a session can overlap the
server's ~45-90 s start with other work; a later call with wait=True waits. Servers stop at
interpreter exit, and die with the test process even when it is killed (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import atexit
import ctypes
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM it when the test process dies."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class VllmServer:
    """One `python -m vllm.entrypoints.openai.api_server` process group."""

    def __init__(
        self,
        model: str | os.PathLike,
        *,
        served_model_name: str | None = None,
        max_model_len: int = 1024,
        extra_args: tuple[str, ...] = (),
        startup_timeout: float = 420.0,
    ) -> None:
        self.model_dir = Path(model)
        self.model = served_model_name or self.model_dir.name
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.max_model_len = max_model_len
        self.extra_args = extra_args
        self.startup_timeout = startup_timeout
        self.log_path = Path(tempfile.mkstemp(prefix="vllm-server-", suffix=".log")[1])
        self.process: subprocess.Popen[bytes] | None = None
        self._ready = False

    def launch(self) -> "VllmServer":
        cmd = [
            sys.executable, "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(self.model_dir),
            "--served-model-name", self.model,
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--max-model-len", str(self.max_model_len),
            "--enforce-eager",
            "--no-enable-chunked-prefill",  # the CPU build crashes on seeded requests with split prefills
            *self.extra_args,
        ]  # fmt: skip
        env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                start_new_session=True, preexec_fn=_die_with_parent,
            )  # fmt: skip
        return self

    def wait(self) -> "VllmServer":
        """Block until the server lists its model; a clear error with the log's tail otherwise."""
        if self._ready:
            return self
        assert self.process is not None, "launch() first"
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"vLLM server exited with code {self.process.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.base_url}/models", timeout=2).status_code == 200:
                    self._ready = True
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(1)
        self.stop()
        raise RuntimeError(f"vLLM server did not answer within {self.startup_timeout} s:\n{self.log_tail()}")

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def stop(self) -> None:
        """SIGTERM the server's process group (it and its engine), SIGKILL what is left after 20 s."""
        if self.process is None or self.process.poll() is not None:
            return
        pgid = self.process.pid  # start_new_session: the group id is the server's pid
        os.killpg(pgid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(pgid, signal.SIGKILL)
            self.process.wait(timeout=10)
        try:  # children that outlived the server
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def __enter__(self) -> "VllmServer":
        return self.launch().wait()

    def __exit__(self, *exc: object) -> None:
        self.stop()


_shared: dict[str, VllmServer] = {}


def shared_vllm_server(model: str | os.PathLike, *, wait: bool = True, **kwargs: object) -> VllmServer:
    """One server per model per test process, stopped at exit; share it between test files."""
    key = str(Path(model).resolve())
    if key not in _shared:
        _shared[key] = VllmServer(model, **kwargs).launch()  # type: ignore[arg-type]
        atexit.register(_shared[key].stop)
    server = _shared[key]
    return server.wait() if wait else server
