"""Shared fixtures of the model tests: the real encoder, exported once per session."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def exported_encoder(tmp_path_factory):
    """(folder, validation figures) of all-MiniLM-L6-v2 exported at float32 to a session tmp dir."""
    from ipr_model.training.export import export_encoder

    out = tmp_path_factory.mktemp("encoder")
    figures = export_encoder(out, precision="fp32")
    return out, figures


@pytest.fixture(scope="session")
def exported_int8(tmp_path_factory):
    """(folder, validation figures) of the default int8 export."""
    from ipr_model.training.export import export_encoder

    out = tmp_path_factory.mktemp("encoder-int8")
    figures = export_encoder(out)
    return out, figures


@pytest.fixture(scope="session")
def encoder(exported_encoder):
    from ipr_model.serving.encoder import OnnxEncoder

    return OnnxEncoder.load(exported_encoder[0])
