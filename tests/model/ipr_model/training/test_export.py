"""The exported encoder: parity with torch, pinned outputs, truncation, torch-free serving."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ipr_model.errors import ArtifactError
from ipr_model.training.export import INT8_MAX_ABS_DIFF, INT8_MIN_COSINE, MAX_ABS_DIFF, MIN_COSINE

pytestmark = pytest.mark.model

REPO = Path(__file__).resolve().parents[4]


def test_export_parity_within_bounds(exported_encoder):
    folder, figures = exported_encoder
    assert figures["texts"] >= 8
    assert figures["max_abs_diff"] <= MAX_ABS_DIFF
    assert figures["min_cosine"] >= MIN_COSINE
    config = json.loads((folder / "encoder.json").read_text())
    assert config["validation"]["max_abs_diff"] == figures["max_abs_diff"]
    assert config["max_length"] == 256
    assert config["pooling"] == "mean" and config["normalize"] is True
    assert config["layers"] == [6] and config["depth"] == 6
    assert config["inputs"] == ["input_ids", "attention_mask", "token_type_ids"]
    assert len(config["source_sha256"]) == 64
    assert config["precision"] == "fp32"


def test_int8_export_is_validated_at_both_precisions(exported_int8, exported_encoder):
    """The default export: the float32 graph passes the strict parity bounds before quantisation,
    the int8 one its own, and it is a different (smaller) graph close to the float32 one."""
    from ipr_model.serving.encoder import OnnxEncoder
    from ipr_model.training.export import VALIDATION_TEXTS

    folder, figures = exported_int8
    assert figures["fp32"]["max_abs_diff"] <= MAX_ABS_DIFF
    assert figures["fp32"]["min_cosine"] >= MIN_COSINE
    assert 0 < figures["int8"]["max_abs_diff"] <= INT8_MAX_ABS_DIFF
    assert figures["int8"]["min_cosine"] >= INT8_MIN_COSINE
    config = json.loads((folder / "encoder.json").read_text())
    assert config["precision"] == "int8" and config["quantization"]["weight_type"] == "int8"
    assert config["validation"]["int8"] == figures["int8"]
    fp32_folder = exported_encoder[0]
    fp32_size = (fp32_folder / "model.onnx").stat().st_size
    assert (folder / "model.onnx").stat().st_size < 0.7 * fp32_size
    a = OnnxEncoder.load(folder).encode(VALIDATION_TEXTS)
    b = OnnxEncoder.load(fp32_folder).encode(VALIDATION_TEXTS)
    cosine = (a * b).sum(axis=1)
    assert cosine.min() >= INT8_MIN_COSINE and cosine.mean() > 0.985
    assert np.abs(a - b).max() > 1e-4  # really quantised


def test_int8_vectors_do_not_depend_on_their_batch(exported_int8):
    from ipr_model.serving.encoder import OnnxEncoder

    encoder = OnnxEncoder.load(exported_int8[0])
    texts = ["hi", "What is 2 + 2?", "word " * 300, "東京タワー 🚀"]
    together = encoder.encode(texts)
    alone = np.stack([encoder.encode([t])[0] for t in texts])
    np.testing.assert_array_equal(together, alone)
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)


def test_unknown_precision_is_refused(tmp_path):
    from ipr_model.errors import ExportError
    from ipr_model.training.export import export_encoder

    with pytest.raises(ExportError, match="precision must be one of int8, fp32, got 'fp16'"):
        export_encoder(tmp_path, precision="fp16")


def test_output_dim_and_unit_norm(encoder):
    texts = ["What is 2 + 2?", "", "x" * 5000, "東京タワー 🚀", "def f(): pass"]
    out = encoder.encode(texts)
    assert encoder.dim == 384
    assert out.shape == (5, 384) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_pinned_canonical_values(encoder):
    """all-MiniLM-L6-v2's embeddings; a change here means the encoder drifted."""
    a, b, c = encoder.encode(
        ["What is 2 + 2?", "How do I reverse a list in Python?", "What is two plus two?"]
    )
    np.testing.assert_allclose(a[:3], [-0.0005, 0.0095, 0.0064], atol=1e-4)
    np.testing.assert_allclose(b[:3], [-0.0024, 0.0786, 0.0793], atol=1e-4)
    assert float(a @ c) == pytest.approx(0.8410, abs=1e-4)
    assert float(a @ b) == pytest.approx(0.0727, abs=1e-4)


def test_matches_sentence_transformers(encoder):
    """The whole serving path agrees with the published pipeline, max_seq_length included."""
    from sentence_transformers import SentenceTransformer

    from ipr_model.training.export import VALIDATION_TEXTS, default_source

    st = SentenceTransformer(str(default_source()), device="cpu")
    assert st.max_seq_length == encoder.max_length
    expected = st.encode(VALIDATION_TEXTS, normalize_embeddings=True)
    np.testing.assert_allclose(encoder.encode(VALIDATION_TEXTS), expected, atol=MAX_ABS_DIFF)


def test_truncation_keeps_the_head(encoder):
    words = [
        "the", "cat", "sat", "on", "a", "mat", "and", "the", "dog", "ran", "to", "the", "house"
    ]
    long_words = [words[i % len(words)] for i in range(2000)]
    long_text = " ".join(long_words)
    # each word is one token: [CLS] + 254 words + [SEP] = 256 tokens
    head = " ".join(long_words[:254])
    other_tail = head + " " + " ".join(["quantum chromodynamics"] * 500)
    shorter = " ".join(long_words[:200])
    e_long, e_head, e_tail, e_short = encoder.encode([long_text, head, other_tail, shorter])
    np.testing.assert_allclose(e_long, e_head, atol=1e-5)
    np.testing.assert_allclose(e_tail, e_head, atol=1e-5)
    assert float(e_short @ e_head) < 0.99999  # the head really is what counts


def test_tail_tokens_keep_the_end_of_a_long_prompt(encoder, tmp_path):
    """With ``tail_tokens`` a long text keeps its last tokens after the head that fits (validated
    against torch with the same cut); short texts are untouched."""
    from ipr_model.serving.encoder import OnnxEncoder
    from ipr_model.training.export import export_encoder

    figures = export_encoder(tmp_path, precision="fp32", tail_tokens=128)
    assert figures["max_abs_diff"] <= MAX_ABS_DIFF and figures["min_cosine"] >= MIN_COSINE
    cut = OnnxEncoder.load(tmp_path)
    assert cut.tail_tokens == 128 and encoder.tail_tokens == 0
    words = [
        "the", "cat", "sat", "on", "a", "mat", "and", "the", "dog", "ran", "to", "the", "house"
    ]
    body = [words[i % len(words)] for i in range(1000)]
    question = ["so", "what", "is", "the", "capital", "city", "of", "france", "and", "why"]
    long_text = " ".join(body + question)  # one token per word
    # [CLS] + 127 head words, then the last 127 words + [SEP]: 256 tokens, nothing left to cut
    kept = " ".join(body[:127] + (body + question)[-127:])
    other_end = " ".join(
        body + ["please", "write", "a", "haiku", "about", "autumn", "leaves", "in", "kyoto"]
    )
    e_long, e_kept, e_other, e_short = cut.encode([long_text, kept, other_end, "What is 2 + 2?"])
    np.testing.assert_allclose(e_long, e_kept, atol=1e-5)
    assert float(e_long @ e_other) < 0.99  # the end counts ...
    h_long, h_other, h_short = encoder.encode([long_text, other_end, "What is 2 + 2?"])
    np.testing.assert_allclose(h_long, h_other, atol=1e-5)  # ... which the head-only cut drops
    np.testing.assert_allclose(e_short, h_short, atol=1e-5)
    assert cut.count_tokens(long_text) == 256
    assert cut.is_cut(long_text) and encoder.is_cut(long_text) and not cut.is_cut(kept)


def test_tail_tokens_must_leave_the_first_token(tmp_path):
    from ipr_model.errors import ExportError
    from ipr_model.training.export import export_encoder

    with pytest.raises(ExportError, match=r"tail_tokens must be in \[0, 255\] .* got 256"):
        export_encoder(tmp_path, precision="fp32", tail_tokens=256)


def test_batching_and_order_do_not_change_vectors(encoder):
    texts = [f"prompt number {i} " + "word " * (i * 7 % 50) for i in range(20)]
    together = encoder.encode(texts)
    alone = np.stack([encoder.encode([t])[0] for t in texts])
    np.testing.assert_allclose(together, alone, atol=1e-6)
    np.testing.assert_allclose(encoder.encode(texts[::-1])[::-1], together, atol=1e-6)


def test_missing_file_is_named(exported_encoder, tmp_path):
    folder, _ = exported_encoder
    from ipr_model.serving.encoder import OnnxEncoder

    (tmp_path / "model.onnx").symlink_to(folder / "model.onnx")
    (tmp_path / "encoder.json").write_text((folder / "encoder.json").read_text())
    with pytest.raises(ArtifactError, match=r"Could not find tokenizer.json in .*"):
        OnnxEncoder.load(tmp_path)


def test_serving_imports_neither_torch_nor_transformers(exported_encoder):
    folder, _ = exported_encoder
    code = (
        "import sys\n"
        "from ipr_model.serving.encoder import OnnxEncoder\n"
        "import ipr_model.training.embed_cache\n"
        f"out = OnnxEncoder.load({str(folder)!r}).encode(['What is 2 + 2?'])\n"
        "assert out.shape == (1, 384), out.shape\n"
        "heavy = ('torch', 'transformers', 'sentence_transformers')\n"
        "bad = [m for m in heavy if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


def test_validation_error_names_the_difference_and_the_bound(exported_encoder):
    from transformers import AutoModel, AutoTokenizer

    from ipr_model.errors import ExportError
    from ipr_model.training import export

    folder, _ = exported_encoder
    source = export.default_source()
    wrapper = export._pooled_module(AutoModel.from_pretrained(source, local_files_only=True))
    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
    inputs = ["input_ids", "attention_mask", "token_type_ids"]
    figures = export._validate(folder, wrapper, tokenizer, inputs, 256, MAX_ABS_DIFF, MIN_COSINE)
    assert figures["min_cosine"] >= MIN_COSINE
    with pytest.raises(
        ExportError, match=r"ONNX export \(fp32\) .* max abs diff \S+ > bound 1e-12"
    ):
        export._validate(folder, wrapper, tokenizer, inputs, 256, 1e-12, MIN_COSINE)


def test_layered_export_holds_the_sentence_embedding_as_its_last_part(encoder, tmp_path):
    """``layers`` pools several layers: each part unit-norm / sqrt(#layers), the whole unit-norm,
    validated against torch like the default; its last part is the default embedding, which
    ``sentence_part`` (the baselines' input) recovers."""
    from ipr_model.serving.encoder import OnnxEncoder, sentence_part
    from ipr_model.training.export import VALIDATION_TEXTS, export_encoder

    figures = export_encoder(tmp_path, precision="fp32", layers=(2, 4, 6))
    assert figures["max_abs_diff"] <= MAX_ABS_DIFF and figures["min_cosine"] >= MIN_COSINE
    layered = OnnxEncoder.load(tmp_path)
    config = json.loads((tmp_path / "encoder.json").read_text())
    assert config["layers"] == [2, 4, 6] and layered.dim == config["dim"] == 3 * 384
    out = layered.encode(VALIDATION_TEXTS)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    parts = np.split(out, 3, axis=1)
    for part in parts:
        np.testing.assert_allclose(np.linalg.norm(part, axis=1), 3**-0.5, atol=1e-5)
    assert float((parts[0] * parts[2]).sum(axis=1).max()) < 0.3  # layer 2 is not layer 6 again
    default = encoder.encode(VALIDATION_TEXTS)
    np.testing.assert_allclose(sentence_part(tmp_path, out), default, atol=2 * MAX_ABS_DIFF)
    assert sentence_part(encoder.path, default) is default


def test_layers_outside_the_model_are_refused(tmp_path):
    from ipr_model.errors import ExportError
    from ipr_model.training.export import export_encoder

    with pytest.raises(
        ExportError, match=r"layers must be distinct numbers in \[0, 6\] .*got \[2, 7\]"
    ):
        export_encoder(tmp_path, layers=(2, 7))
    assert not (tmp_path / "model.onnx").exists()
