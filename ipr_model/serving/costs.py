"""Per-(prompt, model) cost estimates in USD, from what is known before the call.

    estimated_cost = intercept_usd + usd_per_prompt_token * prompt_tokens

- With a price table (``input/output_usd_per_mtok``): the slope is the input price, and the
  intercept is the expected response length (learned from the train split's recorded costs) times
  the output price.
- Without one (the dataset records the real cost of each call): intercept and slope are fitted by
  non-negative least squares on the train split's recorded costs against prompt tokens.

The recorded cost of the prompt being routed is never read: it contains the response's length.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

CHARS_PER_TOKEN = 4  # the convention the dataset files were built with


def estimate_tokens(text: str) -> int:
    """Prompt tokens before the call: 1 token = 4 characters (the datasets' convention)."""
    return max(1, math.ceil(len(text) / CHARS_PER_TOKEN))


@dataclass(frozen=True)
class ModelInfo:
    """A model as a dataset or a price list names it: id, family and list prices (USD per
    million tokens; None where unknown)."""

    id: str
    family: str
    input_usd_per_mtok: float | None
    output_usd_per_mtok: float | None


MTOK = 1_000_000.0


@dataclass(frozen=True)
class Prices:
    """A model's list prices in USD per million tokens: the one home of the price unit."""

    input_usd_per_mtok: float
    output_usd_per_mtok: float

    def cost(self, tokens_in: float, tokens_out: float) -> float:
        return (tokens_in * self.input_usd_per_mtok + tokens_out * self.output_usd_per_mtok) / MTOK

    def output_tokens(self, cost_usd: float, tokens_in: float) -> int:
        """The output tokens that, with ``tokens_in``, make up ``cost_usd`` (0 when free)."""
        if self.output_usd_per_mtok <= 0:
            return 0
        spent_out = max(0.0, cost_usd - tokens_in * self.input_usd_per_mtok / MTOK)
        return int(round(spent_out * MTOK / self.output_usd_per_mtok))


@dataclass(frozen=True)
class CostModel:
    intercept_usd: float
    usd_per_prompt_token: float
    expected_output_tokens: float | None = None
    input_usd_per_mtok: float | None = None
    output_usd_per_mtok: float | None = None

    def estimate(self, prompt_tokens: np.ndarray) -> np.ndarray:
        return self.intercept_usd + self.usd_per_prompt_token * np.asarray(prompt_tokens, float)

    @property
    def prices(self) -> Prices | None:
        """The list prices it was fitted from, when the dataset had them."""
        if self.input_usd_per_mtok is None or self.output_usd_per_mtok is None:
            return None
        return Prices(self.input_usd_per_mtok, self.output_usd_per_mtok)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> CostModel:
        return cls(**d)


def prompt_tokens(texts: list[str]) -> np.ndarray:
    return np.array([estimate_tokens(t) for t in texts], dtype=np.float64)


def fit_cost_model(info: ModelInfo, tokens: np.ndarray, recorded_cost: np.ndarray) -> CostModel:
    """Fit one model's cost estimate on the train split (tokens and recorded costs of its
    prompts)."""
    tokens = np.asarray(tokens, float)
    cost = np.asarray(recorded_cost, float)
    pin, pout = info.input_usd_per_mtok, info.output_usd_per_mtok
    if pin is not None and pout is not None and pout > 0:
        out_tok = np.clip((cost - tokens * pin / MTOK) / (pout / MTOK), 0.0, None)
        expected = float(out_tok.mean())
        return CostModel(
            intercept_usd=expected * pout / MTOK,
            usd_per_prompt_token=pin / MTOK,
            expected_output_tokens=expected,
            input_usd_per_mtok=pin,
            output_usd_per_mtok=pout,
        )
    # Non-negative least squares on [1, tokens] (two unknowns: try the full fit, else one of them).
    a = np.stack([np.ones_like(tokens), tokens], axis=1)
    coef, *_ = np.linalg.lstsq(a, cost, rcond=None)
    if coef[0] < 0 or coef[1] < 0:
        slope = max(float((tokens @ cost) / max(tokens @ tokens, 1e-12)), 0.0)
        err_slope = float(np.mean((cost - slope * tokens) ** 2))
        err_mean = float(np.mean((cost - cost.mean()) ** 2))
        coef = np.array([0.0, slope]) if err_slope < err_mean else np.array([cost.mean(), 0.0])
    return CostModel(intercept_usd=float(coef[0]), usd_per_prompt_token=float(coef[1]))
