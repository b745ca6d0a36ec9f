"""Prefect flows and deployments. The only package that imports Prefect.

Prefect reads its settings when it is first imported, so `prefect_env(project_dir)` must run
before anything imports Prefect: it puts Prefect's home (database, logs, memo store) under the
project's `.curate/prefect` folder instead of the user's home, unless the user chose one.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_HOME = Path(".curate") / "prefect"


def prefect_env(project_dir: str | os.PathLike | None = None) -> Path:
    """Set Prefect's environment (home, quiet telemetry, patient ephemeral start) if unset."""
    home = Path(os.environ.get("PREFECT_HOME") or Path(project_dir or Path.cwd()) / DEFAULT_HOME).resolve()
    home.mkdir(parents=True, exist_ok=True)
    for key, value in {
        "PREFECT_HOME": str(home),
        # Prefect 3.7 derives these from ~/.prefect when PREFECT_HOME comes from the environment
        "PREFECT_MEMO_STORE_PATH": str(home / "memo_store.toml"),
        "PREFECT_LOCAL_STORAGE_PATH": str(home / "storage"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
        "PREFECT_LOGGING_LEVEL": os.environ.get("PREFECT_LOGGING_LEVEL", "INFO"),
    }.items():
        os.environ.setdefault(key, value)
    return home
