"""The router's current scorer, loaded once per process and swapped whole between batches.

A new artifact version is loaded and verified in the background; only when it loaded completely
does it replace the current one. A version that fails to load is refused and the current one is
kept (and the refusal is logged and counted).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from ipr_model.errors import IprError
from ipr_model.scorer import Scorer
from streams.router import metrics

log = logging.getLogger(__name__)


class ScorerHolder:
    def __init__(self, root: Path, encoder_threads: int | None = None):
        self._root = Path(root)
        self._encoder_threads = encoder_threads
        self._scorer: Scorer | None = None
        self._lock = threading.Lock()

    def _load(self, root: Path) -> Scorer:
        return Scorer.load(root, encoder_threads=self._encoder_threads, reuse=self._scorer)

    def current(self) -> Scorer:
        with self._lock:
            if self._scorer is None:
                self._scorer = self._load(self._root)
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
        metrics.ARTIFACT_SWAPS.labels("refused").inc()
        log.error("refused artifact version at %s (%s); keeping %s", where, reason,
                  self.current_version())

    def swap(self, root: Path, expected_sha256: str | None = None) -> bool:
        """Load ``root`` and make it current; on any failure keep the current scorer."""
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
        with self._lock:
            old, self._scorer, self._root = self._scorer, new, Path(root)
        metrics.ARTIFACT_SWAPS.labels("loaded").inc()
        log.warning("swapped artifacts %s -> %s", old.version if old else None, new.version)
        return True

