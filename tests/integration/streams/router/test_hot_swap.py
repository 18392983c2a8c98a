"""Hot swap under load: routers follow router.control, refuse a corrupt version and keep routing
on the one they have, adopt a valid one between batches, and lose or repeat no prompt."""

from __future__ import annotations

import asyncio
import shutil

from benchmarks.traffic import collect, produce, wait_until_routing
from ipr_model.artifacts.manifest import read_manifest, write_manifest
from schemas import ModelUpdate, encode
from tests.integration.kafka_waits import seen
from tests.integration.streams.router.test_router import (
    good_events,
    prepare_with_control,
    start_router,
)
from tests.waits import wait_for_log


def new_version(src, dst):
    """The same models as a new version: a file of its own makes its content, and so its version
    id, differ from every other copy."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("manifest.json"))
    (dst / "NOTES.txt").write_text(f"a copy of {src} as {dst.name}\n")
    old = read_manifest(src)
    write_manifest(dst, old.models, old.carried_over(), parent=old.version)
    return read_manifest(dst)


def test_swap_under_load_refuses_corrupt_and_loses_nothing(
    kafka_bootstrap, unique, small_artifacts, texts, tmp_path, monkeypatch
):
    control, settings, model_topics = prepare_with_control(
        kafka_bootstrap, unique, small_artifacts, monkeypatch)
    v1 = read_manifest(small_artifacts)
    corrupt = new_version(small_artifacts, tmp_path / "corrupt")
    card = next((corrupt.root / "models").iterdir()) / "card.json"
    card.write_text(card.read_text() + " ")
    v2 = new_version(small_artifacts, tmp_path / "v2")
    run, n = unique, 900
    events = good_events(texts, run, n)
    router = start_router("router", small_artifacts, kafka_bootstrap, unique, tmp_path)

    async def announce(m):
        upd = ModelUpdate(version=m.version, location=str(m.root), sha256=m.sha256, models=m.models)
        await produce(kafka_bootstrap, control, [(b"artifacts", encode(upd))], 0)

    async def scenario():
        outputs = [settings.prompts_dlq, *model_topics]
        collector = asyncio.create_task(
            collect(kafka_bootstrap, outputs, run, lambda c: len(c.routed) >= n, 300, settings)
        )
        await wait_until_routing(kafka_bootstrap, settings, run, model_topics)  # then the load
        streaming = asyncio.create_task(produce(kafka_bootstrap, settings.prompts_in, events, 60))
        await seen(kafka_bootstrap, model_topics, run, settings, lambda c: len(c.routed) >= 100,
                   "100 prompts routed on the first version")
        await announce(corrupt)
        await asyncio.to_thread(wait_for_log, router, "refused artifact version")
        await announce(v2)
        await streaming
        return await asyncio.wait_for(collector, 330)

    try:
        got = asyncio.run(scenario())
        assert router.alive(), router.log_tail()
    finally:
        router.stop()
    assert set(got.routed) == {k.decode() for k, _ in events}
    assert got.routed_dupes == 0 and not got.dead
    versions = [got.routed[f"{run}:{i}"].router_version for i in range(n)]
    assert set(versions) == {v1.version, v2.version}
    assert corrupt.version not in versions
    # one switch, never back: every prompt after the first v2 one is v2 as well (in order of
    # arrival per partition; check globally on the produce order with a small tolerance)
    first_v2 = versions.index(v2.version)
    assert versions[-50:] == [v2.version] * 50
    assert versions.count(v1.version) >= first_v2 * 0.9
    assert "refused artifact version" in router.log_tail(20000)


def test_a_starting_router_applies_only_the_latest_announced_version(
    kafka_bootstrap, unique, small_artifacts, texts, tmp_path, monkeypatch
):
    control, settings, model_topics = prepare_with_control(
        kafka_bootstrap, unique, small_artifacts, monkeypatch)
    gone = new_version(small_artifacts, tmp_path / "gone")  # announced, then deleted
    shutil.rmtree(gone.root)
    older = new_version(small_artifacts, tmp_path / "older")
    latest = new_version(small_artifacts, tmp_path / "latest")
    history = [
        (b"artifacts", encode(ModelUpdate(version=m.version, location=str(m.root), sha256=m.sha256,
                                          models=m.models)))
        for m in (gone, older, latest)
    ]
    asyncio.run(produce(kafka_bootstrap, control, history, 0))
    router = start_router("router", small_artifacts, kafka_bootstrap, unique, tmp_path)
    run, n = unique, 40
    events = good_events(texts, run, n)

    async def scenario():
        await produce(kafka_bootstrap, settings.prompts_in, events, 0)
        return await collect(kafka_bootstrap, model_topics, run, lambda c: len(c.routed) >= n,
                             120, settings)

    try:
        wait_for_log(router, "router: consuming", 180)
        got = asyncio.run(scenario())
    finally:
        router.stop()
    log = router.log_tail(50000)
    # loaded at start, before the first batch (not --artifacts first, then a swap), in one line
    assert "swapped artifacts" not in log
    [line] = [ln for ln in log.splitlines() if "router: consuming" in ln]
    assert f"serving version {latest.version} " in line and f"from {latest.root} (" in line
    assert f"(announced on {control} at " in line and f"not --artifacts {small_artifacts}" in line
    assert "refused artifact version" not in log  # the deleted one was never tried
    assert {got.routed[f"{run}:{i}"].router_version for i in range(n)} == {latest.version}
