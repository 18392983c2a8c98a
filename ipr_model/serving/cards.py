"""A model card: everything the router knows about one candidate model, stored in its own folder.

    models/<safe id>/adapter.npz   the quality adapter (MLP, ridge, kNN, joint; see adapters.py)
    models/<safe id>/card.json     id, family, cost model, calibration, training figures
    models/<safe id>/feedback.npz  the local correction from quality feedback, once there is one
                                   (corrections.py)

The kNN parts of the adapters trained together share one memory of train prompts at the artifact
root; each adapter holds only its labels for those rows:

    memory/embeddings.npy          [N, d] float16 unit-norm embeddings of the train prompts
    memory/prompts.sha256          the sha256 of each of those prompts' text, one per line
    memory/index.usearch           its ANN index, when it is large (knn_index.py)

and the joint part's prompt side, learned from every model's outcomes (joint.py):

    joint/prompt.npy               [K, d, r] float32
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np

from ipr_model.artifacts.manifest import model_dir, write_json
from ipr_model.errors import ArtifactError
from ipr_model.serving.adapters import Adapter, Neighbours, unit
from ipr_model.serving.calibration import Calibration
from ipr_model.serving.corrections import Correction
from ipr_model.serving.costs import CostModel
from ipr_model.serving.joint import PromptSide, prompt_side_loader
from ipr_model.serving.knn_index import KnnIndex
from ipr_model.serving.texts import text_sha256


@dataclass(frozen=True)
class ModelCard:
    id: str
    family: str
    cost: CostModel
    calibration: Calibration
    adapter: Adapter
    info: dict = field(default_factory=dict)  # training config and figures, for people
    correction: Correction | None = None  # from quality feedback (recalibrate.py)

    def quality(self, emb: np.ndarray, neighbours: Neighbours | None = None) -> np.ndarray:
        """Predicted quality [n] of this model for embeddings [n, d] (``neighbours``: the batch's
        nearest memory rows, shared between cards): calibrated, then corrected by the feedback
        near ``emb`` when there is some."""
        q = self.calibration(self.adapter.raw(emb, neighbours))
        return q if self.correction is None else self.correction(q, emb)

    def save(self, root: Path) -> None:
        d = Path(root) / model_dir(self.id)
        d.mkdir(parents=True, exist_ok=True)
        self.adapter.save(d / "adapter.npz")
        if self.correction is not None:
            self.correction.save(d / FEEDBACK)
        write_json(
            d / "card.json",
            {
                "id": self.id,
                "family": self.family,
                "cost": self.cost.to_dict(),
                "calibration": self.calibration.to_dict(),
                **self.info,
            },
        )

    @classmethod
    def load(
        cls, root: Path, model_id: str, memory: Callable[[], np.ndarray] | None = None,
        prompt: Callable[[], PromptSide | None] | None = None,
        index: Callable[[], KnnIndex | None] | None = None,
    ) -> ModelCard:
        """``memory``, ``prompt`` and ``index`` give the artifact's shared kNN memory, the joint
        part's prompt side and the memory's index (default: read them from ``root``; pass one
        cached loader of each to share a single copy between cards)."""
        d = Path(root) / model_dir(model_id)
        try:
            card = json.loads((d / "card.json").read_text())
            if card["id"] != model_id:
                raise ValueError(f"card.json names {card['id']!r}")
            memory = memory or memory_loader(root)
            adapter = Adapter.load(d / "adapter.npz", memory, prompt or prompt_side_loader(root),
                                   index or index_loader(root, memory))
            fix = Correction.load(d / FEEDBACK) if (d / FEEDBACK).is_file() else None
            if fix is not None and fix.emb.shape[1] != adapter.dim:
                raise ValueError(f"{FEEDBACK} has {fix.emb.shape[1]}-d embeddings, "
                                 f"the adapter {adapter.dim}-d")
            return cls(
                id=card["id"],
                family=card.get("family", ""),
                cost=CostModel.from_dict(card["cost"]),
                calibration=Calibration.from_dict(card["calibration"]),
                adapter=adapter,
                info={k: v for k, v in card.items() if k not in _STORED},
                correction=fix,
            )
        except (KeyError, TypeError, ValueError, OSError) as e:
            raise ArtifactError(f"{d}: cannot load model {model_id!r}: {e}") from None


def read_cost(root: Path, model_id: str) -> CostModel:
    """Only a model's cost model (its card's ``cost``), without loading its adapter."""
    path = Path(root) / model_dir(model_id) / "card.json"
    try:
        return CostModel.from_dict(json.loads(path.read_text())["cost"])
    except (KeyError, TypeError, ValueError, OSError) as e:
        raise ArtifactError(f"{path}: cannot read the cost of model {model_id!r}: {e}") from None


_STORED = {"id", "family", "cost", "calibration"}
FEEDBACK = "feedback.npz"


MEMORY_EMB = "memory/embeddings.npy"
MEMORY_SHA = "memory/prompts.sha256"


def save_memory(root: Path, emb: np.ndarray, texts: Sequence[str]) -> None:
    """Write the shared kNN memory (float16 embeddings and the sha256 of each prompt)."""
    (Path(root) / MEMORY_EMB).parent.mkdir(parents=True, exist_ok=True)
    with open(Path(root) / MEMORY_EMB, "wb") as f:
        np.save(f, np.asarray(emb, dtype=np.float16))
    (Path(root) / MEMORY_SHA).write_text("".join(text_sha256(t) + "\n" for t in texts))


def load_memory(root: Path) -> np.ndarray:
    """The shared memory's embeddings as unit-norm float32 [N, d]."""
    return unit(np.load(Path(root) / MEMORY_EMB, allow_pickle=False))


def memory_hashes(root: Path) -> list[str] | None:
    """The sha256 of each memory prompt, or None when the artifacts have no shared memory."""
    p = Path(root) / MEMORY_SHA
    return p.read_text().split() if p.is_file() and (Path(root) / MEMORY_EMB).is_file() else None


def memory_loader(root: Path) -> Callable[[], np.ndarray]:
    """A loader that reads the shared memory once, on first use."""
    return cache(lambda: load_memory(root))


def index_loader(root: Path, memory: Callable[[], np.ndarray]) -> Callable[[], KnnIndex | None]:
    """A loader that reads the shared memory's index once, on first use (None: it has none)."""
    return cache(lambda: KnnIndex.load(root, memory()))
