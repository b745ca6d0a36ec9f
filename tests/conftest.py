"""Session-wide test set-up: offline, private caches, shared tiny models and the shared corpus."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

_SESSION_DIR = Path(tempfile.mkdtemp(prefix="curate-tests-"))
for key, value in {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HOME": str(_SESSION_DIR / "hf"),
    "PREFECT_HOME": str(_SESSION_DIR / "prefect"),
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_CPU_OMP_THREADS_BIND": "0-1",
    "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
    "VLLM_CACHE_ROOT": str(_SESSION_DIR / "vllm"),
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "CURATE_EMBED_CACHE": str(_SESSION_DIR / "embeddings"),
}.items():
    os.environ.setdefault(key, value)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real public preference corpus beside the project (never copied into it)."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"shared corpus not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def session_dir() -> Path:
    return _SESSION_DIR


@pytest.fixture(scope="session")
def tiny_chat(session_dir: Path) -> Path:
    from curation.testing import tiny_chat_model

    return tiny_chat_model(session_dir / "models" / "policy")


@pytest.fixture(scope="session")
def tiny_rm(session_dir: Path) -> Path:
    from curation.testing import tiny_reward_model

    return tiny_reward_model(session_dir / "models" / "rm")


@pytest.fixture()
def recipe_dir(tmp_path: Path, tiny_chat: Path, tiny_rm: Path, shared_data: Path) -> Path:
    """A folder with models/policy, models/rm and data/hh.jsonl.gz, for recipes to point at."""
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "policy").symlink_to(tiny_chat)
    (tmp_path / "models" / "rm").symlink_to(tiny_rm)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "hh.jsonl.gz").symlink_to(shared_data / "hh_rlhf_test.jsonl.gz")
    return tmp_path
