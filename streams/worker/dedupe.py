"""Which prompt ids a worker already dispatched, per model and process (bounded, LRU)."""

from __future__ import annotations

from collections import OrderedDict


class Answered:
    """The last `size` prompt_ids dispatched for one model (LRU)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._ids: OrderedDict[str, None] = OrderedDict()

    def check_and_add(self, prompt_id: str) -> bool:
        """True if the id was seen already (and refresh it); else remember it and return False."""
        if prompt_id in self._ids:
            self._ids.move_to_end(prompt_id)
            return True
        if self.size > 0:
            self._ids[prompt_id] = None
            if len(self._ids) > self.size:
                self._ids.popitem(last=False)
        return False

    def __len__(self) -> int:
        return len(self._ids)
