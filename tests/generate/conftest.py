"""Fixtures for generation tests: prompt frames, and vLLM's server launched early in the session."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import polars as pl
import pytest

from curation import schema


def make_prompts(texts: list[str]) -> pl.DataFrame:
    rows = []
    for text in texts:
        messages = schema.user_prompt(text)
        rows.append({"prompt_id": schema.prompt_id(messages), "messages": messages, "source": "test", "meta": "{}"})
    return schema.frame(rows, "prompts")


@pytest.fixture
def prompts() -> Callable[[list[str]], pl.DataFrame]:
    return make_prompts


@pytest.fixture(scope="session", autouse=True)
def _launch_vllm_server_early(request: pytest.FixtureRequest, tiny_chat: Path) -> None:
    """Start vLLM's server (about a minute) while other tests run, if any collected test needs it."""
    if any("vllm_server" in getattr(item, "fixturenames", ()) for item in request.session.items):
        from tests.servers import shared_vllm_server

        shared_vllm_server(tiny_chat, wait=False)


@pytest.fixture(scope="session")
def vllm_server(tiny_chat: Path):
    from tests.servers import shared_vllm_server

    return shared_vllm_server(tiny_chat)
