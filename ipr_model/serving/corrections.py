"""Local corrections from quality feedback: what a model's answers scored on labelled prompts,
against what its estimator predicted for them, carried to the prompts near them.

    q'(x) = q(x) + soft(s(x), band · sqrt(q(x)(1 - q(x))))
    s(x) = sum_i w_i(x) r_i / (strength + sum_i w_i(x)),   r_i = y_i - q(x_i)
    w_i(x) = a_i max(0, (cos(x, x_i) - radius) / (1 - radius))
    soft(s, b) = sign(s) max(0, |s| - b)

``q`` is the card's calibrated estimate without correction, ``x_i`` and ``y_i`` the labelled
prompts' embeddings and observed quality, ``a_i`` in (0, 1] each label's weight for its age
(recalibrate.py: halved every ``half_life_s``, so a model that failed and recovered wins its
traffic back as its old labels fade). A prompt with no labelled prompt within ``radius`` keeps
its estimate; one among labels that agree with the estimator keeps it too; one among labels that
contradict it moves toward them, half way once the labels near it weigh ``strength`` (an exact
repeat of a labelled prompt weighs 1). So a model that fails one task loses that task's traffic
and keeps the rest (docs/measurements.md, "The feedback loop"), which a refitted calibration
(one curve for every prompt) cannot do.

The ``band``: a correction is for a change in a model (a provider's bad update, a task it started
failing), not for the estimator's ordinary error. Labels come only from the model a prompt was
routed to, and routed prompts are a selected sample: on stationary traffic their mean residual
per model reached ±0.18 on zeroeval, and correcting by it cost up to 0.2 ARQGC on prompts
without labels (docs/measurements.md, "Corrections on stationary traffic"). So only the part of
the shift beyond ``band`` standard deviations of one outcome at the estimate moves it: a model
that fails outright (shift about -q) still loses its traffic, more slowly.
Stored as ``models/<id>/feedback.npz``; numpy only (a file without a band has band 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ipr_model.serving.adapters import unit

RADIUS = 0.4  # MiniLM cosine: prompts of one task are mostly above it, other tasks' below
STRENGTH = 1.0  # the estimate weighs as much as one label on the prompt itself
BAND = 0.5  # shifts within half an outcome's standard deviation are the estimator's own error


@dataclass(frozen=True)
class Correction:
    emb: np.ndarray  # [F, d] unit-norm embeddings of the labelled prompts
    residual: np.ndarray  # [F] observed minus estimated quality
    weight: np.ndarray  # [F] each label's weight, in (0, 1]
    radius: float = RADIUS
    strength: float = STRENGTH
    band: float = BAND

    @classmethod
    def fit(cls, estimate: np.ndarray, emb: np.ndarray, observed: np.ndarray,
            weight: np.ndarray | None = None, radius: float = RADIUS,
            strength: float = STRENGTH, band: float = BAND) -> Correction:
        """From labels: the uncorrected ``estimate`` [F] at the labelled prompts ``emb`` [F, d],
        the ``observed`` quality [F] and each label's ``weight`` [F] (default 1)."""
        if not 0.0 <= radius < 1.0 or strength <= 0 or band < 0:
            raise ValueError(f"expected 0 <= radius < 1, strength > 0 and band >= 0, got "
                             f"radius {radius}, strength {strength}, band {band}")
        residual = np.clip(observed, 0.0, 1.0) - np.asarray(estimate, np.float64)
        weight = np.ones(len(residual)) if weight is None else np.asarray(weight, np.float64)
        if weight.shape != residual.shape or not np.all((weight > 0) & (weight <= 1)):
            raise ValueError(f"expected one weight in (0, 1] per label, got {weight.shape}")
        return cls(unit(np.asarray(emb, np.float16)), residual.astype(np.float32),
                   weight.astype(np.float32), radius, strength, band)

    def __call__(self, quality: np.ndarray, emb: np.ndarray) -> np.ndarray:
        """The corrected quality [n] of estimates ``quality`` [n] at embeddings ``emb`` [n, d]."""
        sim = np.asarray(emb, np.float32) @ self.emb.T
        w = np.maximum(sim - self.radius, 0.0) * (self.weight / (1.0 - self.radius))
        shift = (w @ self.residual) / (self.strength + w.sum(axis=1))
        q = np.asarray(quality, np.float64)
        band = self.band * np.sqrt(np.clip(q * (1.0 - q), 0.0, None))
        return np.clip(q + np.sign(shift) * np.maximum(np.abs(shift) - band, 0.0), 0.0, 1.0)

    def save(self, path: Path) -> None:
        with open(path, "wb") as f:  # uncompressed, through a file object: stable bytes
            np.savez(f, emb=self.emb.astype(np.float16), residual=self.residual, weight=self.weight,
                     radius=np.float32(self.radius), strength=np.float32(self.strength),
                     band=np.float32(self.band))

    @classmethod
    def load(cls, path: Path) -> Correction:
        with np.load(path, allow_pickle=False) as z:
            emb, res = unit(z["emb"]), z["residual"].astype(np.float32)
            weight = z["weight"].astype(np.float32)
            radius, strength = float(z["radius"]), float(z["strength"])
            band = float(z["band"]) if "band" in z.files else 0.0
        if (emb.ndim != 2 or res.shape != (len(emb),) or weight.shape != res.shape
                or not 0 <= radius < 1 or strength <= 0 or band < 0):
            raise ValueError(f"{path}: inconsistent feedback correction")
        return cls(emb, res, weight, radius, strength, band)
