"""`openai`: any OpenAI-compatible chat-completions server (vLLM's server, TGI, hosted APIs).

Requests go out concurrently (at most `max_concurrency` at a time) through the `openai` SDK's async
client, which retries 408/409/429/5xx, timeouts and dropped connections (honouring Retry-After,
also as milliseconds or a date) with the recipe's exponential backoff and jitter. A 200 whose body
is no completion is retried here, within the same attempt budget. A request that still fails, or
that the server refuses (other 4xx, e.g. a prompt over the context length), becomes a row with
`error` set, and the run goes on. A quick health check first turns "no server there" into one
clear error. The SDK costs about 1 ms more per request than the hand-written httpx client did
(116 vs 132 requests/s against an instant local server; the same with faults:
benchmarks/openai_client.py), nothing beside a model's generation time.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import threading
from typing import Any

import openai
from pydantic import Field

from curation import schema
from curation.generate import GENERATORS
from curation.generate.base import Completion, GenerationError, Generator, GeneratorConfig, Request
from curation.stats import Stats

log = logging.getLogger("curation.generate")


class _Unreadable(Exception):
    """A 200 reply that holds no completion (a proxy's HTML page, no choices): worth another try."""


class _Client(openai.AsyncOpenAI):
    """The SDK's client with the recipe's backoff: the SDK keeps its delays (0.5 s doubling to 8 s)
    as module constants, so its one delay hook is overridden; everything else is the SDK's."""

    def __init__(self, *, backoff_base: float, backoff_max: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.backoff_base, self.backoff_max = backoff_base, backoff_max

    def _calculate_retry_timeout(self, remaining_retries: int, options: Any, response_headers: Any = None) -> float:
        retry_after = self._parse_retry_after_header(response_headers)
        if retry_after is not None and 0 <= retry_after <= 60:
            return retry_after
        attempt = options.get_max_retries(self.max_retries) - remaining_retries
        return backoff(attempt, self.backoff_base, self.backoff_max)


def backoff(attempt: int, base: float, most: float) -> float:
    """Seconds before retry `attempt` + 1: base * 2**attempt, capped, with jitter of +-50%."""
    return min(most, base * 2**attempt) * random.uniform(0.5, 1.5)


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

    def model_identity(self) -> str:
        """The server's URL and model name with what the server reports about that model (vLLM:
        the weights it loaded as `root`, `parent`, `max_model_len`); asked once per instance. A
        server that cannot be asked gives an identity of its own, so nothing cached matches it."""
        if not hasattr(self, "_identity"):
            self._identity = schema.content_hash("openai", self._url, self.config.model, self.reported_model())
        return self._identity

    def _key(self) -> str:
        return os.environ.get(self.config.api_key_env) or "EMPTY"  # the SDK wants one; keyless servers ignore it

    def _models(self) -> list[dict[str, Any]]:
        """The server's `/models` entries (one quick request, no retries)."""
        client = openai.OpenAI(base_url=self._url, api_key=self._key(), timeout=min(10.0, self.config.timeout), max_retries=0)
        with client:
            return [m.to_dict() for m in client.models.list().data]  # the fields the server sent, as it sent them

    def reported_model(self) -> dict[str, Any] | None:
        """The server's `/models` entry for this model, without fields that change per request."""
        try:
            entries = self._models()
        except (openai.OpenAIError, ValueError, TypeError):
            return None
        for entry in entries:
            if entry.get("id") == self.config.model:
                return {k: entry[k] for k in ("id", "root", "parent", "owned_by", "max_model_len", "revision") if k in entry}
        return None

    def output_settings(self) -> dict[str, Any]:
        return {"extra_body": self.config.extra_body} if self.config.extra_body else {}

    def check(self) -> None:
        if not self.config.health_check:
            return
        url = f"{self._url}/models"
        try:
            served = [m.get("id") for m in self._models()]
        except openai.APIConnectionError as exc:
            cause = exc.__cause__ or exc
            raise GenerationError(
                f"no OpenAI-compatible server answers at {self._url} ({type(cause).__name__}: {cause}); "
                "start it, or fix `base_url`"
            ) from None
        except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
            raise GenerationError(
                f"{url} refused the credentials (HTTP {exc.status_code}); put the API key in ${self.config.api_key_env}"
            ) from None
        except openai.APIStatusError as exc:
            log.warning("openai: %s answered HTTP %d; going on, failures are recorded per row", url, exc.status_code)
            return
        except (openai.OpenAIError, ValueError, TypeError):
            return  # not every server lists its models the same way
        if served and self.config.model not in served:
            raise GenerationError(f"model {self.config.model!r} is not served at {self._url}; it serves {served}")

    def complete(self, requests: list[Request], stats: Stats) -> list[Completion]:
        return _run_async(self._complete_all(requests, stats))

    async def _complete_all(self, requests: list[Request], stats: Stats) -> list[Completion]:
        import httpx

        from curation.progress import progress

        async def count_retries(request: httpx.Request) -> None:  # the SDK numbers each request's attempts
            if request.headers.get("x-stainless-retry-count", "0") != "0":
                stats.retries += 1

        c = self.config
        limit = asyncio.Semaphore(c.max_concurrency)
        http = openai.DefaultAsyncHttpxClient(limits=httpx.Limits(max_connections=c.max_concurrency),
                                              event_hooks={"request": [count_retries]})
        client = _Client(base_url=self._url, api_key=self._key(), timeout=c.timeout, max_retries=c.max_retries,
                         http_client=http, backoff_base=c.backoff_base, backoff_max=c.backoff_max)
        async with client:
            with progress(f"openai: {c.model}", total=len(requests), min_total=8) as advance:

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
        if s.stop:
            body["stop"] = list(s.stop)
        if s.logprobs:
            body["logprobs"] = True
        extra = {"top_k": s.top_k} if s.top_k > 0 else {}  # not part of OpenAI's API: sent only when asked for
        return {**body, "extra_body": {**extra, **self.config.extra_body}}

    async def _complete_one(self, client: _Client, req: Request, stats: Stats) -> Completion:
        """One request: the SDK retries failed sends, this loop re-sends a 200 that held no completion
        (at most `max_retries` times, each with the SDK's retries)."""
        body, most = self._body(req), self.config.max_retries + 1
        for resend in range(self.config.max_retries + 1):
            try:
                return _completion(await client.chat.completions.with_raw_response.create(**body))
            except _Unreadable as exc:
                last = str(exc)
            except openai.APIStatusError as exc:
                detail = f"HTTP {exc.status_code}: {exc.response.text[:300]}"
                return Completion(error=f"failed after {most} attempts: {detail}" if _retryable(exc) else detail)
            except openai.APITimeoutError:
                return Completion(error=f"failed after {most} attempts: timed out after {self.config.timeout} s")
            except openai.APIConnectionError as exc:
                cause = exc.__cause__ or exc
                return Completion(error=f"failed after {most} attempts: connection failed: {type(cause).__name__}: {cause}")
            if resend < self.config.max_retries:
                stats.retries += 1
                await asyncio.sleep(backoff(resend, self.config.backoff_base, self.config.backoff_max))
        return Completion(error=f"failed after {most} attempts: {last}")


def _retryable(exc: openai.APIStatusError) -> bool:
    """Whether the SDK retried this status (so the budget is spent): 408, 409, 429 and 5xx."""
    return exc.status_code in (408, 409, 429) or exc.status_code >= 500


def _completion(raw: Any) -> Completion:
    """A completion from the SDK's raw response; raises _Unreadable when the body holds none."""
    try:
        data = raw.http_response.json()
        choice = data["choices"][0]
        text = choice["message"]["content"]
        if not isinstance(text, str):
            raise TypeError(f"message content is {type(text).__name__}")
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise _Unreadable(f"unreadable reply ({type(exc).__name__}: {exc}): {raw.http_response.text[:200]!r}") from None
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
