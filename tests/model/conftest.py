"""Shared fixtures of the model tests: the real encoder, exported once per session."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def exported_encoder(tmp_path_factory):
    """(folder, validation figures) of all-MiniLM-L6-v2 exported to a session tmp dir."""
    from ipr_model.export import export_encoder

    out = tmp_path_factory.mktemp("encoder")
    figures = export_encoder(out)
    return out, figures


@pytest.fixture(scope="session")
def encoder(exported_encoder):
    from ipr_model.encoder import OnnxEncoder

    return OnnxEncoder.load(exported_encoder[0])
