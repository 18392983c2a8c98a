"""Which version a starting router serves, and its one line saying why: the version announced on
router.control (every router of a group serves one), else its --artifacts."""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from types import SimpleNamespace
from unittest import mock

import pytest

from ipr_model.artifacts.manifest import read_manifest, write_manifest
from schemas import ModelHealth, ModelUpdate, encode
from streams.router import agent

ANNOUNCED_AT = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC


def _new_version(src, dst):
    """The same models as a new version (a file of its own changes its content and id)."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("manifest.json"))
    (dst / "NOTES.txt").write_text(f"a copy of {src} as {dst.name}\n")
    old = read_manifest(src)
    write_manifest(dst, old.models, old.carried_over(), parent=old.version)
    return read_manifest(dst)


def _announce(m, offset: int = 3, location=None) -> SimpleNamespace:
    update = ModelUpdate(version=m.version, location=str(location or m.root), sha256=m.sha256,
                         models=m.models)
    return SimpleNamespace(key=b"artifacts", value=encode(update), partition=0, offset=offset,
                           timestamp=int(ANNOUNCED_AT * 1000))


def _start(artifacts, tmp_path, history, caplog):
    """A router's start-up (no broker: router.control's history given), and its log lines."""
    from streams.router.app import create_app
    from streams.router.settings import RouterSettings

    s = RouterSettings(artifacts=artifacts, kafka_bootstrap="127.0.0.1:1", web_enabled=False,
                       data_dir=tmp_path / "faust", versions_from="filesystem",
                       control="router.control.t")
    _, router = create_app(s)
    caplog.clear()
    with mock.patch.object(agent, "control_history", mock.AsyncMock(return_value=history)), \
            caplog.at_level(logging.INFO, logger="streams.router"):
        asyncio.run(router.load_scorer())
    assert router.serving.is_set()
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    return router, lines


@pytest.fixture(scope="module")
def versions(small_artifacts, tmp_path_factory):
    root = tmp_path_factory.mktemp("versions")
    return _new_version(small_artifacts, root / "v2"), _new_version(small_artifacts, root / "v3")


def test_the_announced_version_wins_over_a_new_directory_and_the_line_says_why(
        versions, tmp_path, caplog):
    v2, v3 = versions
    health = SimpleNamespace(key=b"health:m", partition=0, offset=9, timestamp=0, value=encode(
        ModelHealth(model_id="m", healthy=True, worker="w", consecutive_errors=0,
                    reported_at=time.time(), ttl_s=60)))
    router, lines = _start(v3.root, tmp_path, [_announce(v2), health], caplog)
    assert router.scorers.current_version() == v2.version and router.scorers.root == v2.root
    [line] = lines  # one line: which version, from where, why (not a silent swap)
    assert f"serving version {v2.version} (" in line and f"from {v2.root} (" in line
    assert "(announced on router.control.t at 2023-11-14 22:13:20 UTC, not --artifacts " \
           f"{v3.root} ({v3.version}): every router of a group serves the announced version)" \
           in line
    assert line.startswith("router: consuming ")


def test_the_given_directory_serves_when_nothing_is_announced_or_it_is_the_announced_one(
        versions, tmp_path, caplog):
    v2, v3 = versions
    router, [line] = _start(v3.root, tmp_path, [], caplog)
    assert router.scorers.current_version() == v3.version
    assert line.endswith(f"from {v3.root} (from --artifacts {v3.root}; nothing announced on "
                         "router.control.t)")
    router, [line] = _start(v3.root, tmp_path, [_announce(v2, 1), _announce(v3, 2)], caplog)
    assert router.scorers.current_version() == v3.version
    assert line.endswith(f"(from --artifacts {v3.root}, the version announced on "
                         "router.control.t at 2023-11-14 22:13:20 UTC)")


def test_an_announced_version_that_cannot_be_loaded_leaves_the_given_one_serving(
        versions, tmp_path, caplog):
    v2, v3 = versions
    gone = _announce(v2, location=tmp_path / "gone")
    router, lines = _start(v3.root, tmp_path, [gone], caplog)
    assert router.scorers.current_version() == v3.version
    refused, line = lines
    assert refused.startswith("refused artifact version at ")
    caplog.clear()  # follow_control reads the same announcement: weighed already, not refused again
    asyncio.run(router._apply_control(gone))
    assert not caplog.records and router.scorers.current_version() == v3.version
    assert line.endswith(f"(from --artifacts {v3.root}; version {v2.version}, announced on "
                         "router.control.t at 2023-11-14 22:13:20 UTC, could not be loaded "
                         "(logged))")
