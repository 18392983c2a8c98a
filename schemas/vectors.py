"""Embeddings on the wire (`RoutingDecision.embedding`): base64 of little-endian float16, 2 bytes
per dimension."""

from __future__ import annotations

import base64

import numpy as np


def pack(vector: np.ndarray) -> str:
    return base64.b64encode(np.asarray(vector, dtype="<f2").tobytes()).decode("ascii")


def unpack(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<f2").astype(np.float32)
