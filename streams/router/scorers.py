"""The router's current scorer, loaded once per process and swapped whole between batches.

A new artifact version is loaded and verified in the background; only when it loaded completely
does it replace the current one. A version that fails to load is refused and the current one is
kept (and the refusal is logged and counted).

The shadow version (:mod:`streams.router.shadow`) is a second holder loaded the same way: it
starts empty, takes the live scorer's encoder when its files are the same bytes, and counts in
its own metric.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from ipr_model.errors import IprError
from ipr_model.serving.scorer import Scorer
from streams.router import malloc, metrics

log = logging.getLogger(__name__)


class ScorerHolder:
    def __init__(self, root: Path, encoder_threads: int | None = None, *,
                 partner: ScorerHolder | None = None, what: str = "artifacts",
                 swaps=metrics.ARTIFACT_SWAPS,
                 on_load: Callable[[Scorer], None] | None = metrics.serving):
        """``partner``: a holder whose scorer's encoder may be reused (the shadow's: the live
        one); ``what`` names the holder in its log lines, ``swaps`` counts its loads,
        ``on_load`` is told of each scorer it loads (the live one's models' counters)."""
        self._root = Path(root)
        self._encoder_threads = encoder_threads
        self._scorer: Scorer | None = None
        self._lock = threading.Lock()
        self._partner = partner
        self._what = what
        self._swaps = swaps
        self._on_load = on_load

    def _load(self, root: Path) -> Scorer:
        reuse = (self._partner.loaded() if self._partner else None) or self._scorer
        return Scorer.load(root, encoder_threads=self._encoder_threads, reuse=reuse)

    def _loaded(self, scorer: Scorer) -> None:
        if self._on_load is not None:
            self._on_load(scorer)

    def loaded(self) -> Scorer | None:
        """The current scorer, None before one is loaded (loads nothing)."""
        return self._scorer

    def clear(self) -> str | None:
        """Drop the current scorer (the shadow's, on stop); returns its version."""
        with self._lock:
            old, self._scorer = self._scorer, None
        return old.version if old else None

    def current(self) -> Scorer:
        with self._lock:
            if self._scorer is None:
                self._scorer = self._load(self._root)
                self._loaded(self._scorer)
                log.info("loaded artifacts %s version %s", self._root, self._scorer.version)
            return self._scorer

    def current_version(self) -> str | None:
        return self._scorer.version if self._scorer is not None else None

    @property
    def root(self) -> Path:
        """The directory of the version served (or to be loaded first)."""
        return self._root

    def refuse(self, where: object, reason: object) -> None:
        """Log and count a version that is not loaded; the current one stays."""
        self._swaps.labels("refused").inc()
        log.error("refused %s version at %s (%s); keeping %s", self._artifact(), where, reason,
                  self.current_version())

    def swap(self, root: Path, expected_sha256: str | None = None, *, quiet: bool = False) -> bool:
        """Load ``root`` and make it current; on any failure keep the current scorer.
        ``quiet``: the swap is logged at INFO (the router's start-up line says it)."""
        try:
            new = self._load(root)
            if expected_sha256 and new.manifest.sha256 != expected_sha256:
                raise IprError(
                    f"manifest sha256 {new.manifest.sha256[:12]}… is not the announced "
                    f"{expected_sha256[:12]}…"
                )
        except (IprError, OSError, ValueError) as e:
            self.refuse(root, e)
            return False
        self._loaded(new)
        with self._lock:
            old, self._scorer, self._root = self._scorer, new, Path(root)
        self._swaps.labels("loaded").inc()
        (log.info if quiet else log.warning)("swapped %s %s -> %s", self._what,
                                             old.version if old else None, new.version)
        del old
        malloc.trim()  # what the versions replaced before freed (docs/measurements.md, "Soak")
        return True

    def _artifact(self) -> str:
        return self._what.removesuffix("s")  # "artifact", "shadow artifact"

