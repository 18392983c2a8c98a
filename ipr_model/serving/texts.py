"""Prompt texts: the one home of their hash (embedding cache keys, kNN memory, replay lookup)."""

from __future__ import annotations

import hashlib


def text_digest(text: str) -> bytes:
    """sha256 of the UTF-8 text."""
    return hashlib.sha256(text.encode("utf-8")).digest()


def text_sha256(text: str) -> str:
    """sha256 of the UTF-8 text, as hex."""
    return text_digest(text).hex()
