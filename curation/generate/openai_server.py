"""`openai`: any OpenAI-compatible chat-completions server (vLLM's server, TGI, hosted APIs).

Requests go out concurrently (at most `max_concurrency` at a time) through one async HTTP client.
429, 5xx, timeouts, dropped connections and unreadable replies are retried with exponential
backoff and jitter (a server's Retry-After is honoured); a request that still fails, or that the
server refuses (other 4xx, e.g. a prompt over the context length), becomes a row with `error`
set, and the run goes on. A quick health check first turns "no server there" into one clear error.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import threading
from typing import Any

from pydantic import Field

from curation import schema
from curation.generate import GENERATORS
from curation.generate.base import Completion, GenerationError, Generator, GeneratorConfig, Request
from curation.stats import Stats

log = logging.getLogger("curation.generate")

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class _Refused(Exception):
    """The server answered and will answer the same again: do not retry."""


@GENERATORS.register("openai")
class OpenAIGenerator(Generator):
    class Config(GeneratorConfig):
        backend: str = "openai"
        base_url: str = "http://127.0.0.1:8000/v1"
        api_key_env: str = "OPENAI_API_KEY"  # name of the variable holding the key; unset: no key
        timeout: float = Field(60.0, gt=0)  # seconds per request
        max_concurrency: int = Field(16, ge=1)
        max_retries: int = Field(5, ge=0)
        backoff_base: float = Field(0.5, ge=0)  # seconds; attempt i waits about base * 2**i
        backoff_max: float = Field(30.0, ge=0)
        health_check: bool = True  # GET /models before the run: fail fast when nothing is there
        extra_body: dict[str, Any] = Field(default_factory=dict)  # server-specific request fields

    config: Config

    @property
    def _url(self) -> str:
        return self.config.base_url.rstrip("/")

    def _headers(self) -> dict[str, str]:
        key = os.environ.get(self.config.api_key_env)
        return {"Authorization": f"Bearer {key}"} if key else {}

    def model_identity(self) -> str:
        """The server's URL and model name with what the server reports about that model (vLLM:
        the weights it loaded as `root`, `parent`, `max_model_len`); asked once per instance. A
        server that cannot be asked gives an identity of its own, so nothing cached matches it."""
        if not hasattr(self, "_identity"):
            self._identity = schema.content_hash("openai", self._url, self.config.model, self.reported_model())
        return self._identity

    def reported_model(self) -> dict[str, Any] | None:
        """The server's `/models` entry for this model, without fields that change per request."""
        import httpx

        try:
            reply = httpx.get(f"{self._url}/models", headers=self._headers(), timeout=min(10.0, self.config.timeout))
            entries = reply.json()["data"] if reply.status_code == 200 else []
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return None
        for entry in entries if isinstance(entries, list) else []:
            if isinstance(entry, dict) and entry.get("id") == self.config.model:
                return {k: entry[k] for k in ("id", "root", "parent", "owned_by", "max_model_len", "revision") if k in entry}
        return None

    def output_settings(self) -> dict[str, Any]:
        return {"extra_body": self.config.extra_body} if self.config.extra_body else {}

    def check(self) -> None:
        if not self.config.health_check:
            return
        import httpx

        url = f"{self._url}/models"
        try:
            reply = httpx.get(url, headers=self._headers(), timeout=min(10.0, self.config.timeout))
        except httpx.HTTPError as exc:
            raise GenerationError(
                f"no OpenAI-compatible server answers at {self._url} ({type(exc).__name__}: {exc}); "
                "start it, or fix `base_url`"
            ) from None
        if reply.status_code in (401, 403):
            raise GenerationError(
                f"{url} refused the credentials (HTTP {reply.status_code}); put the API key in ${self.config.api_key_env}"
            )
        if reply.status_code != 200:
            log.warning("openai: %s answered HTTP %d; going on, failures are recorded per row", url, reply.status_code)
            return
        try:
            served = [m["id"] for m in reply.json()["data"]]
        except (ValueError, KeyError, TypeError):
            return  # not every server lists its models the same way
        if served and self.config.model not in served:
            raise GenerationError(f"model {self.config.model!r} is not served at {self._url}; it serves {served}")

    def complete(self, requests: list[Request], stats: Stats) -> list[Completion]:
        return _run_async(self._complete_all(requests, stats))

    async def _complete_all(self, requests: list[Request], stats: Stats) -> list[Completion]:
        import httpx

        from curation.progress import progress

        limit = asyncio.Semaphore(self.config.max_concurrency)
        limits = httpx.Limits(max_connections=self.config.max_concurrency)
        async with httpx.AsyncClient(timeout=self.config.timeout, limits=limits, headers=self._headers()) as client:
            with progress(f"openai: {self.config.model}", total=len(requests), min_total=8) as advance:

                async def one(req: Request) -> Completion:
                    async with limit:
                        comp = await self._complete_one(client, req, stats)
                    advance()
                    return comp

                return list(await asyncio.gather(*(one(r) for r in requests)))

    def _body(self, req: Request) -> dict[str, Any]:
        s = req.sampling
        body: dict[str, Any] = {
            "model": self.config.model,
            "messages": req.messages,
            "n": 1,
            "temperature": s.temperature,
            "top_p": s.top_p,
            "max_tokens": s.max_tokens,
            "seed": req.seed,
        }
        if s.top_k > 0:
            body["top_k"] = s.top_k  # not part of OpenAI's API: sent only when asked for
        if s.stop:
            body["stop"] = list(s.stop)
        if s.logprobs:
            body["logprobs"] = True
        return {**body, **self.config.extra_body}

    async def _complete_one(self, client: Any, req: Request, stats: Stats) -> Completion:
        import httpx

        body, last = self._body(req), "no attempt"
        for attempt in range(self.config.max_retries + 1):
            if attempt:
                stats.retries += 1
            try:
                reply = await client.post(f"{self._url}/chat/completions", json=body)
                return _read_reply(reply)
            except _Refused as exc:
                return Completion(error=str(exc))
            except _Retryable as exc:
                last, wait = str(exc), exc.retry_after
            except httpx.TimeoutException:
                last, wait = f"timed out after {self.config.timeout} s", None
            except httpx.TransportError as exc:
                last, wait = f"connection failed: {type(exc).__name__}: {exc}", None
            if attempt < self.config.max_retries:
                backoff = min(self.config.backoff_max, self.config.backoff_base * 2**attempt)
                await asyncio.sleep(wait if wait is not None else backoff * random.uniform(0.5, 1.5))
        return Completion(error=f"failed after {self.config.max_retries + 1} attempts: {last}")


def _read_reply(reply: Any) -> Completion:
    """A completion from an HTTP reply; raises _Retryable or _Refused."""
    if reply.status_code != 200:
        detail = reply.text[:300]
        if reply.status_code in RETRY_STATUS:
            retry_after = reply.headers.get("retry-after")
            try:
                wait = min(60.0, float(retry_after)) if retry_after is not None else None
            except ValueError:
                wait = None
            raise _Retryable(f"HTTP {reply.status_code}: {detail}", wait)
        raise _Refused(f"HTTP {reply.status_code}: {detail}")
    try:
        data = reply.json()
        choice = data["choices"][0]
        text = choice["message"]["content"]
        if not isinstance(text, str):
            raise TypeError(f"message content is {type(text).__name__}")
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise _Retryable(f"unreadable reply ({type(exc).__name__}: {exc}): {reply.text[:200]!r}") from None
    usage = data.get("usage") or {}
    logprob = None
    content = (choice.get("logprobs") or {}).get("content")
    if content:
        logprob = float(sum(t["logprob"] for t in content))
    return Completion(
        text=text,
        n_tokens=usage.get("completion_tokens", len(content) if content else None),
        logprob=logprob,
        finish_reason=choice.get("finish_reason"),
    )


def _run_async(coro: Any) -> Any:
    """Run a coroutine from sync code, also where an event loop already runs (notebooks, flows)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = asyncio.run(coro)
        except BaseException as exc:  # re-raised in the caller's thread
            result["error"] = exc

    thread = threading.Thread(target=target, name="curate-openai")
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["value"]
