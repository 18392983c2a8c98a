"""Loader for the routing datasets: the ones shipped in ``data/`` and any folder in their format.

A dataset folder holds ``models.json`` and ``prompts.jsonl`` (or ``prompts.jsonl.gz``, as shipped);
``data/README.md`` describes the format and the datasets, ``docs/design.md`` how they are used.
:func:`default_data_dir` is where the datasets are looked for: ``$IPR_DATA_DIR``, else ``data``.

Every row is validated; a bad one raises :class:`DatasetError` naming ``file:line`` and the problem.
"""

from __future__ import annotations

import gzip
import json
import math
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ipr_model.errors import DatasetError
from ipr_model.serving.costs import ModelInfo, estimate_tokens  # noqa: F401 - re-exported
from ipr_model.settings import FolderSettings

SPLITS = ("train", "test")
PROMPT_FILES = ("prompts.jsonl", "prompts.jsonl.gz")  # read in this order: the first one present


def default_data_dir() -> Path:
    """The folder of dataset folders: ``$IPR_DATA_DIR`` when set, else ``data`` (relative to the
    working directory, like the default ``artifacts/zeroeval``)."""
    return FolderSettings().data_dir


def prompts_file(folder: str | Path) -> Path:
    """``folder/prompts.jsonl``, or ``folder/prompts.jsonl.gz`` when the plain file is absent."""
    folder = Path(folder)
    for name in PROMPT_FILES:
        path = folder / name
        if path.is_file():
            return path
    raise DatasetError(
        f"{folder}: no prompts file (a dataset folder needs prompts.jsonl or prompts.jsonl.gz)"
    )


def _lines(path: Path):
    """(line number, line) of a text file, gunzipped when its name ends in ``.gz``; a file that
    cannot be read (a truncated or corrupt gzip, bytes that are not utf-8) is a DatasetError."""
    lineno = 0
    try:
        with (gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz"
              else path.open(encoding="utf-8")) as f:
            for lineno, line in enumerate(f, 1):
                yield lineno, line
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}:{lineno + 1}: cannot read: {e}") from None


@dataclass
class Dataset:
    """One dataset (or a split of it): prompts with a recorded quality and cost for every model."""

    name: str
    models: list[ModelInfo]
    ids: list[str]
    tasks: list[str]
    splits: list[str]
    prompts: list[str]
    quality: np.ndarray  # [n, m] in [0, 1]
    cost: np.ndarray  # [n, m] USD, recorded (for measuring, never for deciding)
    quality_kind: str = ""
    meta: dict = field(default_factory=dict)

    @property
    def model_ids(self) -> list[str]:
        return [m.id for m in self.models]

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, index: np.ndarray | list[int]) -> Dataset:
        idx = np.asarray(index, dtype=np.int64)
        return Dataset(
            name=self.name,
            models=self.models,
            ids=[self.ids[i] for i in idx],
            tasks=[self.tasks[i] for i in idx],
            splits=[self.splits[i] for i in idx],
            prompts=[self.prompts[i] for i in idx],
            quality=self.quality[idx],
            cost=self.cost[idx],
            quality_kind=self.quality_kind,
            meta=self.meta,
        )

    def split(self, name: str) -> Dataset:
        if name not in SPLITS:
            raise DatasetError(f"split must be one of {SPLITS}, got {name!r}")
        idx = [i for i, s in enumerate(self.splits) if s == name]
        if not idx:
            raise DatasetError(f"dataset {self.name!r} has no {name!r} rows")
        return self.subset(idx)

    def has_split(self, name: str) -> bool:
        return name in self.splits

    def restrict(self, model_ids: list[str]) -> Dataset:
        """The same prompts with only ``model_ids``, in that order (e.g. an artifact's models)."""
        cols = []
        for m in model_ids:
            self.model(m)  # a clear error when missing
            cols.append(self.model_ids.index(m))
        return Dataset(
            name=self.name,
            models=[self.models[j] for j in cols],
            ids=self.ids,
            tasks=self.tasks,
            splits=self.splits,
            prompts=self.prompts,
            quality=self.quality[:, cols],
            cost=self.cost[:, cols],
            quality_kind=self.quality_kind,
            meta=self.meta,
        )

    def model(self, model_id: str) -> ModelInfo:
        for m in self.models:
            if m.id == model_id:
                return m
        raise DatasetError(
            f"model {model_id!r} is not in dataset {self.name!r}; "
            f"it has: {', '.join(self.model_ids)}"
        )


def _price(value, where: str) -> float | None:
    if value is None:
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
        raise DatasetError(f"{where}: price must be a number >= 0 or null, got {value!r}")
    return float(value)


def load_models(path: Path) -> tuple[dict, list[ModelInfo]]:
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise DatasetError(f"{path}: not found (a dataset folder needs models.json)") from None
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}:{e.lineno}: invalid JSON: {e.msg}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("models"), list) or not doc["models"]:
        raise DatasetError(f"{path}: expected an object with a non-empty 'models' list")
    models: list[ModelInfo] = []
    for i, m in enumerate(doc["models"]):
        where = f"{path}: models[{i}]"
        if not isinstance(m, dict) or not isinstance(m.get("id"), str) or not m["id"]:
            raise DatasetError(f"{where}: expected an object with a string 'id'")
        models.append(
            ModelInfo(
                id=m["id"],
                family=str(m.get("family") or ""),
                input_usd_per_mtok=_price(m.get("input_usd_per_mtok"), where),
                output_usd_per_mtok=_price(m.get("output_usd_per_mtok"), where),
            )
        )
    ids = [m.id for m in models]
    if len(set(ids)) != len(ids):
        raise DatasetError(f"{path}: duplicate model ids")
    return doc, models


def _scores(row: dict, key: str, ids: list[str], where: str, upper: float | None) -> list[float]:
    obj = row.get(key)
    if not isinstance(obj, dict):
        raise DatasetError(f"{where}: '{key}' must be an object of model id -> number")
    missing = [m for m in ids if m not in obj]
    if missing:
        raise DatasetError(f"{where}: '{key}' is missing model(s) {', '.join(missing)}")
    extra = sorted(set(obj) - set(ids))
    if extra:
        raise DatasetError(f"{where}: '{key}' has model(s) not in models.json: {', '.join(extra)}")
    out = []
    for m in ids:
        v = obj[m]
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
            raise DatasetError(f"{where}: '{key}'[{m!r}] must be a finite number >= 0, got {v!r}")
        if upper is not None and v > upper:
            raise DatasetError(f"{where}: '{key}'[{m!r}] must be <= {upper}, got {v!r}")
        out.append(float(v))
    return out


def load_dataset(folder: str | Path) -> Dataset:
    """Load ``folder/models.json`` and ``folder/prompts.jsonl`` (or, when that is absent,
    ``folder/prompts.jsonl.gz``), validating every row."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"{folder}: not a directory (expected a dataset folder)")
    doc, models = load_models(folder / "models.json")
    ids = [m.id for m in models]
    path = prompts_file(folder)
    row_ids, tasks, splits, prompts, quality, cost = [], [], [], [], [], []
    seen: set[str] = set()
    with closing(_lines(path)) as lines:  # closes the file as soon as a bad row stops the read
        for lineno, line in lines:
            where = f"{path}:{lineno}"
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DatasetError(f"{where}: invalid JSON: {e.msg}") from None
            if not isinstance(row, dict):
                raise DatasetError(f"{where}: expected a JSON object")
            for key in ("id", "task", "split", "prompt"):
                if not isinstance(row.get(key), str):
                    raise DatasetError(f"{where}: '{key}' must be a string")
            if row["id"] in seen:
                raise DatasetError(f"{where}: duplicate id {row['id']!r}")
            seen.add(row["id"])
            if row["split"] not in SPLITS:
                raise DatasetError(
                    f"{where}: 'split' must be one of {SPLITS}, got {row['split']!r}"
                )
            if not row["prompt"].strip():
                raise DatasetError(f"{where}: 'prompt' is empty")
            quality.append(_scores(row, "quality", ids, where, upper=1.0))
            cost.append(_scores(row, "cost_usd", ids, where, upper=None))
            row_ids.append(row["id"])
            tasks.append(row["task"])
            splits.append(row["split"])
            prompts.append(row["prompt"])
    if not row_ids:
        raise DatasetError(f"{path}: no rows")
    return Dataset(
        name=str(doc.get("dataset") or folder.name),
        models=models,
        ids=row_ids,
        tasks=tasks,
        splits=splits,
        prompts=prompts,
        quality=np.asarray(quality, dtype=np.float64),
        cost=np.asarray(cost, dtype=np.float64),
        quality_kind=str(doc.get("quality_kind") or ""),
        meta={k: v for k, v in doc.items() if k != "models"},
    )
