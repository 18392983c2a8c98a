"""Where the project keeps what it can make again: ``$IPR_CACHE_DIR``, else
``~/.cache/ipr-router``. Embeddings (``embeddings/``), exported encoders (``encoders/``) and the
local broker's jars (``kafka-<version>/``) each have a folder in it."""

from __future__ import annotations

import os
from pathlib import Path

ENV_CACHE_DIR = "IPR_CACHE_DIR"


def cache_dir() -> Path:
    return Path(os.environ.get(ENV_CACHE_DIR) or Path.home() / ".cache" / "ipr-router")
