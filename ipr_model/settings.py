"""Where the estimator's code looks for datasets and keeps what it can make again: the only
environment ``ipr_model`` reads, with the ``IPR_`` prefix, when a function asks (never at import).
An empty variable counts as unset."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class FolderSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="IPR_", extra="ignore", env_ignore_empty=True)

    data_dir: Path = Field(
        Path("data"),
        description="the folder of dataset folders, where the lab's commands look for "
        "`zeroeval` (relative to the working directory, like the default artifacts/zeroeval)",
    )
    cache_dir: Path | None = Field(
        None,
        description="what can be made again: embeddings, exported encoders, the local broker's "
        "jars (unset: ~/.cache/ipr-router)",
    )


class IndexSettings(BaseSettings):
    """How a scorer (the router, the feedback service, ``ipr evaluate``) searches the kNN memory
    when its artifact has an index (ipr_model/serving/knn_index.py)."""

    model_config = SettingsConfigDict(env_prefix="IPR_KNN_", extra="ignore",
                                      env_ignore_empty=True)

    index: Literal["on", "off"] = Field(
        "on",
        description="`off`: scan the whole memory even when the artifact has an index (exact; "
        "to compare, or as an escape hatch)",
    )
    nprobe: int = Field(
        32, ge=1,
        description="clusters of the index searched per prompt: more finds more of the exact "
        "neighbours and costs more (docs/measurements.md, \"Scoring as the memory grows\")",
    )
