"""A replay worker whose model degrades on one task, for the drift scenario:

    python -m benchmarks.degraded_worker MODEL|TASK|MARKER worker --backend replay ...

answers like ``ipr worker ...``, except that MODEL reports quality 0 on TASK's prompts whose id
contains MARKER. The knob lives here, with the lab, not in the worker's settings."""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace

from schemas import RoutedPrompt
from streams.worker import run
from streams.worker.backends.base import Backend, Completion, Deltas


@dataclass(frozen=True)
class Degradation:
    model: str
    task: str
    marker: str

    @classmethod
    def parse(cls, spec: str) -> Degradation:
        parts = spec.split("|")
        if len(parts) != 3 or not all(parts):
            raise SystemExit(f"expected MODEL|TASK|MARKER, got {spec!r}")
        return cls(*parts)

    def applies(self, routed: RoutedPrompt, c: Completion) -> bool:
        return (routed.model_id == self.model and c.task == self.task
                and self.marker in routed.prompt_id and c.quality is not None)


@dataclass
class Degraded:
    """A backend whose answers' quality is 0 where the degradation applies."""

    backend: Backend
    degradation: Degradation

    async def complete(self, routed: RoutedPrompt, deltas: Deltas | None = None) -> Completion:
        c = await self.backend.complete(routed, deltas)
        return replace(c, quality=0.0) if self.degradation.applies(routed, c) else c


def main(argv: list[str]) -> None:
    if not argv:
        raise SystemExit(__doc__)
    degradation = Degradation.parse(argv[0])
    build = run.build_backends

    def degraded(*args, **kwargs):
        models, factory, cleanup = build(*args, **kwargs)
        return models, lambda m: Degraded(factory(m), degradation), cleanup

    run.build_backends = degraded
    from streams.cli.main import app

    app(argv[1:])


if __name__ == "__main__":
    main(sys.argv[1:])
