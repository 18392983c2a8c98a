"""A model card: everything the router knows about one candidate model, stored in its own folder.

    models/<safe id>/adapter.npz   the quality adapter
    models/<safe id>/card.json     id, family, cost model, calibration, training figures
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ipr_model.adapters import Adapter
from ipr_model.artifacts import model_dir, write_json
from ipr_model.calibration import Calibration
from ipr_model.costs import CostModel
from ipr_model.errors import ArtifactError


@dataclass(frozen=True)
class ModelCard:
    id: str
    family: str
    cost: CostModel
    calibration: Calibration
    adapter: Adapter
    info: dict = field(default_factory=dict)  # training config and figures, for people

    def quality(self, emb: np.ndarray) -> np.ndarray:
        """Calibrated predicted quality [n] of this model for embeddings [n, d]."""
        return self.calibration(self.adapter.raw(emb))

    def save(self, root: Path) -> None:
        d = Path(root) / model_dir(self.id)
        d.mkdir(parents=True, exist_ok=True)
        self.adapter.save(d / "adapter.npz")
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
    def load(cls, root: Path, model_id: str) -> "ModelCard":
        d = Path(root) / model_dir(model_id)
        try:
            card = json.loads((d / "card.json").read_text())
            if card["id"] != model_id:
                raise ValueError(f"card.json names {card['id']!r}")
            return cls(
                id=card["id"],
                family=card.get("family", ""),
                cost=CostModel.from_dict(card["cost"]),
                calibration=Calibration.from_dict(card["calibration"]),
                adapter=Adapter.load(d / "adapter.npz"),
                info={k: v for k, v in card.items() if k not in _STORED},
            )
        except (KeyError, TypeError, ValueError, OSError) as e:
            raise ArtifactError(f"{d}: cannot load model {model_id!r}: {e}") from None


_STORED = {"id", "family", "cost", "calibration"}
