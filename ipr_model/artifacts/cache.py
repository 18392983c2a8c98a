"""Where the project keeps what it can make again: ``$IPR_CACHE_DIR``, else
``~/.cache/ipr-router`` (:class:`ipr_model.settings.FolderSettings`). Embeddings
(``embeddings/``), exported encoders (``encoders/``) and the local broker's jars
(``kafka-<version>/``) each have a folder in it."""

from __future__ import annotations

from pathlib import Path

from ipr_model.settings import FolderSettings


def cache_dir() -> Path:
    return FolderSettings().cache_dir or Path.home() / ".cache" / "ipr-router"
