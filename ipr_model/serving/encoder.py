"""Serving-side text encoder: the frozen sentence encoder exported by
:mod:`ipr_model.training.export`.

Runs on numpy + onnxruntime + tokenizers only (never torch or transformers), from a
self-contained folder::

    model.onnx       input_ids, attention_mask[, token_type_ids] -> sentence_embedding [batch, dim]
                     (mean pooling and L2 normalisation are inside the graph)
    tokenizer.json   the source model's tokenizer
    encoder.json     name, max_length, tail_tokens, dim, inputs, ...

Texts longer than ``max_length`` tokens (special tokens included) are truncated: they keep their
last ``tail_tokens`` tokens and fill the rest from their head (``tail_tokens`` 0, the default, keeps
the head only; ``cut``). Prompts that end with their question (few-shot templates, a document then
a question) lose it to a head-only cut.
Loading is explicit (``OnnxEncoder.load``); importing this module loads nothing.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from ipr_model.errors import ArtifactError

ENCODER_FILES = ("model.onnx", "tokenizer.json", "encoder.json")
TOKENIZER_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def configure_tokenizer(tokenizer: Tokenizer, max_length: int, tail_tokens: int = 0) -> Tokenizer:
    """Truncate to ``max_length`` tokens keeping the head (with ``tail_tokens``, no truncation: the
    encoder ``cut``s each text itself); pad to the longest text of a batch."""
    if tail_tokens:
        tokenizer.no_truncation()
    else:
        tokenizer.enable_truncation(max_length, direction="right")
    pad = tokenizer.padding or {}
    tokenizer.enable_padding(
        pad_id=pad.get("pad_id", 0),
        pad_type_id=pad.get("pad_type_id", 0),
        pad_token=pad.get("pad_token", "[PAD]"),
        length=None,
    )
    return tokenizer


def cut(ids: list[int], max_length: int, tail_tokens: int) -> list[int]:
    """A whole text's tokens (special tokens included) cut to ``max_length``: its last
    ``tail_tokens`` (the closing [SEP] among them) after as many of its first as fit ([CLS] first).
    Shorter sequences, and any with ``tail_tokens`` 0 (the tokenizer cut those), are kept whole."""
    if len(ids) <= max_length or not tail_tokens:
        return ids
    return ids[: max_length - tail_tokens] + ids[len(ids) - tail_tokens :]


def check_tail_tokens(tail_tokens: int, max_length: int) -> None:
    if not 0 <= tail_tokens < max_length:
        raise ValueError(
            f"tail_tokens must be in [0, {max_length - 1}] (max_length {max_length} minus the "
            f"first token), got {tail_tokens}"
        )


class OnnxEncoder:
    """Sentence encoder: ``encode(texts)`` -> float32 [n, dim], each row of unit norm."""

    def __init__(
        self, session: ort.InferenceSession, tokenizer: Tokenizer, config: dict, path: Path,
        serial: ort.InferenceSession | None = None, workers: int = 1,
    ):
        self._session = session
        self._tokenizer = tokenizer
        self._config = config
        self.path = path
        # Feed the graph only the inputs it declares.
        self._inputs = [i.name for i in session.get_inputs()]
        self._output = session.get_outputs()[0].name
        # Several texts: one single-threaded run per worker thread at a time (see ``encode``).
        self._serial = serial
        self._pool = ThreadPoolExecutor(workers, "ipr-encoder") if serial is not None else None

    @classmethod
    def load(cls, directory: Path | str, intra_op_threads: int | None = None,
             profile: bool = False) -> OnnxEncoder:
        """Load an encoder folder. ``intra_op_threads`` defaults to ``os.cpu_count()``: a single
        text runs on that many threads, several texts run that many at a time on one thread
        each; ``profile``: onnxruntime records every node's time (``benchmarks.scaling``)."""
        directory = Path(directory)
        for name in ENCODER_FILES:
            if not (directory / name).is_file():
                present = sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []
                raise ArtifactError(
                    f"Could not find {name} in {directory} (an encoder folder holds "
                    f"{', '.join(ENCODER_FILES)}; found: {present or 'nothing'})"
                )
        try:
            config = encoder_config(directory)
            max_length, dim = int(config["max_length"]), int(config["dim"])
            tail_tokens = int(config.get("tail_tokens", 0))
            check_tail_tokens(tail_tokens, max_length)
        except (ValueError, KeyError, TypeError) as e:
            raise ArtifactError(
                f"{directory / 'encoder.json'} is not a valid encoder config (expected JSON with "
                f"'max_length', 'dim' and optionally 'tail_tokens'): {e!r}"
            ) from e

        tokenizer = configure_tokenizer(
            Tokenizer.from_file(str(directory / "tokenizer.json")), max_length, tail_tokens
        )
        tokenizer.no_padding()  # one text per run (``encode``): nothing to pad

        threads = intra_op_threads or os.cpu_count() or 1
        session = _session(directory / "model.onnx", threads, profile)
        serial = _session(directory / "model.onnx", 1) if threads > 1 and not profile else None
        unknown = {i.name for i in session.get_inputs()} - set(TOKENIZER_INPUTS)
        if unknown:
            raise ArtifactError(
                f"{directory / 'model.onnx'} declares inputs {sorted(unknown)}; "
                f"expected a subset of {list(TOKENIZER_INPUTS)}"
            )
        out_dim = session.get_outputs()[0].shape[-1]
        if isinstance(out_dim, int) and out_dim != dim:
            raise ArtifactError(
                f"{directory}: encoder.json says dim={dim} but model.onnx outputs {out_dim}"
            )
        return cls(session, tokenizer, config, directory, serial, threads)

    @property
    def dim(self) -> int:
        return int(self._config["dim"])

    @property
    def max_length(self) -> int:
        return int(self._config["max_length"])

    @property
    def tail_tokens(self) -> int:
        return int(self._config.get("tail_tokens", 0))

    @property
    def precision(self) -> str:
        return str(self._config.get("precision", "fp32"))

    @property
    def name(self) -> str:
        return str(self._config.get("name", self.path.name))

    @property
    def inputs(self) -> list[str]:
        return list(self._inputs)

    def count_tokens(self, text: str) -> int:
        """Tokens the encoder sees for ``text`` (after truncation, special tokens included)."""
        return min(len(self._tokenizer.encode(text).ids), self.max_length)

    def is_cut(self, text: str) -> bool:
        """Whether ``text`` is longer than ``max_length`` tokens, so the encoder drops a part."""
        encoding = self._tokenizer.encode(text)
        return len(encoding.ids) > self.max_length or bool(encoding.overflowing)

    def encode(self, texts: list[str]) -> np.ndarray:
        """Embed ``texts``: float32 [len(texts), dim], L2-normalised, in the order given.

        One onnxruntime run per text, so a text's embedding never depends on the texts beside it:
        the int8 graph scales its activations per run (a shared batch moved embeddings by a
        cosine of up to 0.016), and on this CPU padded batches were no faster than single runs.
        A lone text runs on every intra-op thread; several run side by side, one thread each
        (the same bytes out): a transformer pass over one short text leaves a second thread
        mostly waiting, so on 2 cores this embeds about 1.5x the texts per second.
        """
        if isinstance(texts, str):
            raise TypeError("encode expects a list of texts, got a single str")
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        length, tail = self.max_length, self.tail_tokens
        feeds = []
        for encoding in self._tokenizer.encode_batch(list(texts)):
            # a no-op cut without tail_tokens: the tokenizer truncated already
            ids, mask, types = (cut(x, length, tail) for x in
                                (encoding.ids, encoding.attention_mask, encoding.type_ids))
            feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
            feeds.append({n: np.array([feed[n]], dtype=np.int64) for n in self._inputs})

        def run(session: ort.InferenceSession, i: int) -> None:
            out[i] = session.run([self._output], feeds[i])[0][0]

        if self._pool is None or len(feeds) < 2:
            for i in range(len(feeds)):
                run(self._session, i)
        else:  # each worker takes the next text as it finishes one (onnxruntime frees the GIL)
            list(self._pool.map(lambda i: run(self._serial, i), range(len(feeds))))
        return out


def _session(model: Path, threads: int, profile: bool = False) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    # No busy-waiting between runs: spinning pool threads would take the cores a router's
    # Kafka consumer and event loop need between batches (2 cores here).
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.enable_profiling = profile
    try:
        return ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own untyped errors
        raise ArtifactError(f"Could not load {model}: {e}") from e


def encoder_config(encoder_dir: Path | str) -> dict:
    """The encoder folder's ``encoder.json`` (max_length, tail_tokens, dim, layers, ...)."""
    return json.loads((Path(encoder_dir) / "encoder.json").read_text())


def sentence_part(encoder_dir: Path | str, emb: np.ndarray) -> np.ndarray:
    """The source model's sentence embedding (its last layer, mean-pooled, unit-norm) within
    embeddings ``emb`` of the encoder in ``encoder_dir``: for an encoder that pools the last layer
    among others (``ipr train --layers``), that layer's part, re-normalised; otherwise ``emb``."""
    config = encoder_config(encoder_dir)
    layers, depth = config.get("layers") or [], config.get("depth")
    if len(layers) < 2 or depth not in layers:
        return emb
    width = int(config["dim"]) // len(layers)
    part = emb[:, layers.index(depth) * width : (layers.index(depth) + 1) * width]
    return part / np.maximum(np.linalg.norm(part, axis=1, keepdims=True), 1e-12)
