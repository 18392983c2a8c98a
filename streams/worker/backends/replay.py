"""Answers from a dataset's recorded outcomes: the worker backend of the demo, the benchmarks and
the tests (a replay of real recorded quality and cost, not an LLM)."""

from __future__ import annotations

import asyncio
import re
import time

from ipr_model.serving.costs import Prices
from ipr_model.serving.texts import text_sha256
from ipr_model.serving.views import scored_text
from ipr_model.training.datasets import Dataset
from schemas import AssistantMessage, RoutedPrompt
from schemas import limits as L
from streams.worker.backends.base import Completion, Deltas, elapsed_ms, prompt_tokens

REPLAY_UNKNOWN_PROMPT = "prompt_id not in replay dataset"


class ReplayBackend:
    """Answers from a dataset's recorded outcomes: the recorded cost and quality of that model.

    The prompt is found by prompt_id (the demo uses the dataset's row ids), else by the sha256 of
    its text (of a chat request: its newest user message, ``ipr_model.serving.views``).
    tokens_in is the prompt's chars/4; tokens_out is backed out of the recorded cost where the
    dataset has prices, else 0. `latency_s` simulates the call's duration.
    """

    def __init__(
        self, dataset: Dataset, *, latency_s: float = 0.0
    ) -> None:
        self.dataset = dataset
        self.latency_s = latency_s
        self._row_by_id = {row_id: i for i, row_id in enumerate(dataset.ids)}
        self._row_by_text: dict[str, int] = {}
        for i, text in enumerate(dataset.prompts):
            self._row_by_text.setdefault(text_sha256(text), i)
        self._column = {m: j for j, m in enumerate(dataset.model_ids)}
        self._prices = {
            m.id: Prices(m.input_usd_per_mtok, m.output_usd_per_mtok)
            for m in dataset.models
            if m.input_usd_per_mtok is not None and m.output_usd_per_mtok
        }

    def row_of(self, routed: RoutedPrompt) -> int | None:
        row = self._row_by_id.get(routed.prompt_id)
        if row is not None:
            return row
        return self._row_by_text.get(text_sha256(scored_text(routed.conversation())))

    async def complete(self, routed: RoutedPrompt, deltas: Deltas | None = None) -> Completion:
        began = time.monotonic()
        if self.latency_s > 0:
            await asyncio.sleep(self.latency_s)
        tokens_in = prompt_tokens(routed)
        row, column = self.row_of(routed), self._column.get(routed.model_id)
        error = None
        if row is None:
            error = REPLAY_UNKNOWN_PROMPT
        elif column is None:
            error = f"model {routed.model_id!r} not in replay dataset {self.dataset.name!r}"
        if error is not None:
            return Completion(
                text="", tokens_in=tokens_in, tokens_out=0, cost_usd=0.0,
                latency_ms=elapsed_ms(began), error=error,
            )
        assert row is not None and column is not None
        task = self.dataset.tasks[row]
        cost = float(self.dataset.cost[row, column])
        quality = float(self.dataset.quality[row, column])
        prices = self._prices.get(routed.model_id)
        tokens_out = prices.output_tokens(cost, tokens_in) if prices is not None else 0
        text = f"[replay] recorded answer (quality={quality:g})"
        if deltas is not None:  # word by word, as a model streams
            for piece in re.findall(r"\S+\s*", text):
                await deltas.add(piece)
        return Completion(
            text=text,
            message=AssistantMessage(content=text),
            finish_reason="stop",
            tokens_in=tokens_in,
            tokens_out=tokens_out,
            cost_usd=cost,
            latency_ms=elapsed_ms(began),
            quality=quality,
            task=task[: L.MAX_LABEL_CHARS] or None,
        )
