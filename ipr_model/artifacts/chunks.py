"""An artifact version as content-addressed file chunks, for routers that share no filesystem
with the feedback service (no Kafka here: :mod:`streams.control.versions` moves the records).

A new version is published as the files that differ from its parent (a recalibration rewrites
only the corrected models' small files) plus its manifest, each cut into chunks keyed by the
file's sha256 (:func:`schemas.topics.file_chunk_key`). Content keys make the chain of versions
unnecessary: a router rebuilds version V from any version it has (every file whose sha256 it
already holds is hard-linked) and the topic (every other one), and the ``ModelUpdate``'s sha256
names V's manifest, which names every file's sha256. Nothing is trusted that does not match.

Chunks, not one record per file: Kafka refuses a message over 1 MB by default, and a model's
``feedback.npz`` passes that at about 1,300 labels (its default cap is 2,000).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath

from ipr_model.artifacts.manifest import MANIFEST, Manifest, link_or_copy, read_manifest
from ipr_model.errors import ArtifactError
from schemas.topics import file_chunk_key, parse_file_chunk_key

CHUNK_BYTES = 512 * 1024  # with its key and headers, well under Kafka's default 1 MB message

Record = tuple[bytes | None, bytes | None]  # (key, value); a None value is a tombstone


def changed_files(new: Manifest, parent: Manifest | None) -> list[str]:
    """The files of ``new`` whose content differs from the same path in ``parent`` (every file
    when there is no parent), sorted."""
    old = parent.data["files"] if parent is not None else {}
    return sorted(rel for rel, sha in new.data["files"].items() if old.get(rel) != sha)


def chunk_count(size: int) -> int:
    return max(1, -(-size // CHUNK_BYTES))


def chunks(data: bytes, sha256: str) -> list[tuple[bytes, bytes]]:
    """The records of one file: (key, bytes) per chunk of at most CHUNK_BYTES."""
    n = chunk_count(len(data))
    return [(file_chunk_key(sha256, i, n), data[i * CHUNK_BYTES:(i + 1) * CHUNK_BYTES])
            for i in range(n)]


def version_records(new: Manifest, parent: Manifest | None) -> list[tuple[bytes, bytes]]:
    """The records that carry ``new`` to a router holding ``parent``: the chunks of every
    changed file, the manifest's last (a reader that finds the manifest finds its files)."""
    out: list[tuple[bytes, bytes]] = []
    for rel in changed_files(new, parent):
        data = (new.root / rel).read_bytes()
        _check(data, new.data["files"][rel], f"{new.root / rel}")
        out += chunks(data, new.data["files"][rel])
    return out + chunks((new.root / MANIFEST).read_bytes(), new.sha256)


def retired_keys(removed: Iterable[Manifest], kept: Iterable[Manifest]) -> list[bytes]:
    """The keys of the removed versions' files and manifests that no kept version uses: to
    tombstone, so compaction drops them. Call it before the removed directories are deleted
    (a file's size gives its chunk count)."""
    kept = list(kept)
    in_use = {m.sha256 for m in kept} | {sha for m in kept for sha in m.data["files"].values()}
    keys: set[bytes] = set()
    for m in removed:
        for rel, sha in [(MANIFEST, m.sha256), *m.data["files"].items()]:
            path = m.root / rel
            if sha not in in_use and path.is_file():
                n = chunk_count(path.stat().st_size)
                keys.update(file_chunk_key(sha, i, n) for i in range(n))
    return sorted(keys)


def assemble(records: Iterable[Record]) -> dict[str, bytes]:
    """sha256 -> file bytes from the topic's records in offset order: the latest record of a
    key counts, a tombstone deletes it, a file missing a chunk is left out, other keys are
    ignored. Nothing is verified here (:func:`materialise` checks every file)."""
    latest: dict[tuple[str, int, int], bytes] = {}
    for key, value in records:
        parsed = parse_file_chunk_key(key)
        if parsed is None:
            continue
        if value is None:
            latest.pop(parsed, None)
        else:
            latest[parsed] = value
    parts: dict[tuple[str, int], dict[int, bytes]] = defaultdict(dict)
    for (sha, i, n), value in latest.items():
        parts[(sha, n)][i] = value
    return {sha: b"".join(got[i] for i in range(n))
            for (sha, n), got in parts.items() if len(got) == n}


def local_files(roots: Iterable[Path]) -> dict[str, Path]:
    """sha256 -> a file with that content, from the manifests of the versions at hand (a
    directory that is not a version is skipped)."""
    out: dict[str, Path] = {}
    for root in roots:
        try:
            m = read_manifest(root, verify=False)
        except ArtifactError:
            continue
        for rel, sha in m.data["files"].items():
            if sha not in out and (m.root / rel).is_file():
                out[sha] = m.root / rel
    return out


def materialise(manifest_sha256: str, blobs: Mapping[str, bytes], local: Iterable[Path],
                out: Path) -> Manifest:
    """Write the version whose manifest has sha256 ``manifest_sha256`` to ``out``: each file
    hard-linked (else copied) from a ``local`` version that holds the same content, or written
    from ``blobs`` (sha256 -> bytes, :func:`assemble`); then every file is checked against the
    manifest. Raises ArtifactError, leaving nothing at ``out``, when the manifest or a file is
    missing or does not match."""
    raw = blobs.get(manifest_sha256)
    if raw is None:
        raise ArtifactError(f"no manifest with sha256 {manifest_sha256[:12]}… on the topic "
                            "(expected the version's records before its announcement)")
    _check(raw, manifest_sha256, "the manifest")
    have = local_files(local)
    out = Path(out)
    if out.exists():
        raise ArtifactError(f"{out} already exists: a received version needs a new directory")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        (tmp / MANIFEST).write_bytes(raw)
        m = read_manifest(tmp, verify=False)  # its format, models and file list
        for rel, sha in sorted(m.data["files"].items()):
            dst = tmp / _inside(rel)
            dst.parent.mkdir(parents=True, exist_ok=True)
            if sha in have:
                link_or_copy(have[sha], dst)
            elif sha in blobs:
                _check(blobs[sha], sha, f"{rel} from the topic")
                dst.write_bytes(blobs[sha])
            else:
                raise ArtifactError(
                    f"version {m.version}: {rel} (sha256 {sha[:12]}…) is neither in a version "
                    f"at hand nor on the topic; expected its parent "
                    f"{m.data.get('parent_version')} (or an ancestor) here")
        read_manifest(tmp)  # every file, linked or written, against the manifest
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return read_manifest(out, verify=False)


def _check(data: bytes, sha256: str, what: str) -> None:
    got = hashlib.sha256(data).hexdigest()
    if got != sha256:
        raise ArtifactError(f"{what} is tampered or corrupt: sha256 {got[:12]}… where "
                            f"{sha256[:12]}… was expected")


def _inside(rel: str) -> PurePosixPath:
    """A manifest path that stays inside the version directory."""
    p = PurePosixPath(rel)
    if p.is_absolute() or ".." in p.parts or not p.parts or rel == MANIFEST:
        raise ArtifactError(f"the manifest lists {rel!r}: expected a relative path inside the "
                            "version, other than the manifest")
    return p
