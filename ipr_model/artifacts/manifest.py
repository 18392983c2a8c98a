"""Versioned, self-contained artifact directories: write atomically, load only when every hash
matches.

    DIR/manifest.json                 format, version, models, encoder facts, sha256 of every file
    DIR/encoder/model.onnx            the frozen encoder (mean-pooled, normalised), ONNX
    DIR/encoder/tokenizer.json        its tokenizer
    DIR/encoder/encoder.json          max_length, dim, export validation figures
    DIR/models/<safe id>/adapter.npz  that model's quality adapter (MLP, ridge, kNN labels, ability)
    DIR/models/<safe id>/card.json    id, family, cost model, calibration, training figures
    DIR/models/<safe id>/feedback.npz the local correction from quality feedback (once there is one)
    DIR/memory/embeddings.npy         the train prompts' embeddings (float16): the kNN memory
    DIR/memory/prompts.sha256         the sha256 of each memory prompt's text, one per line
    DIR/joint/prompt.npy              the joint part's prompt side, from every model's outcomes

Each model's files are its own: adding a model writes two new files and a new manifest; every file
already in the manifest keeps its bytes. The manifest is written last (write-then-rename), so a
directory without one is a partial write and is refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from ipr_model.errors import ArtifactError
from schemas.topics import safe_name

FORMAT = "ipr-artifacts/1"
MANIFEST = "manifest.json"
ENCODER_DIR = "encoder"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def link_or_copy(src: str | Path, dst: str | Path) -> None:
    """A hard link where the filesystem allows one (same device), else a copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def write_json(path: Path, obj: dict) -> None:
    """Write JSON atomically (temp file, fsync, rename) with stable formatting."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def model_dir(model_id: str) -> str:
    return f"models/{safe_name(model_id)}"


def built_with() -> dict:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for pkg in ("ipr-router", "numpy", "onnxruntime", "tokenizers", "torch", "transformers"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[pkg] = metadata.version(pkg)
    return out


def content_version(files: dict[str, str]) -> str:
    digest = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:8]
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + digest


def write_manifest(root: Path, models: list[str], extra: dict, parent: str | None = None) -> dict:
    """Hash every file under ``root`` (but the manifest) and write the manifest last."""
    missing = [m for m in models if not (root / model_dir(m) / "card.json").is_file()]
    if missing:
        raise ArtifactError(f"{root}: no card.json for model(s) {', '.join(missing)}")
    files = {
        p.relative_to(root).as_posix(): sha256_file(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != MANIFEST and not p.name.startswith(".")
    }
    manifest = {
        "format": FORMAT,
        "version": content_version(files),
        "parent_version": parent,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "models": list(models),
        "files": files,
        "built_with": built_with(),
        **extra,
    }
    write_json(root / MANIFEST, manifest)
    return manifest


MANAGED_KEYS = frozenset(
    {"format", "version", "parent_version", "created_at", "models", "files", "built_with"}
)


@dataclass(frozen=True)
class Manifest:
    root: Path
    data: dict
    sha256: str

    @property
    def version(self) -> str:
        return self.data["version"]

    @property
    def models(self) -> list[str]:
        return list(self.data["models"])

    def carried_over(self) -> dict:
        """The manifest's own fields (dataset, settings) that a new version keeps."""
        return {k: v for k, v in self.data.items() if k not in MANAGED_KEYS}


def read_manifest(root: str | Path, verify: bool = True) -> Manifest:
    """Read ``root/manifest.json`` and (by default) check every file's sha256 against it."""
    root = Path(root)
    path = root / MANIFEST
    if not root.is_dir():
        raise ArtifactError(f"{root}: not a directory (expected an artifact directory)")
    if not path.is_file():
        raise ArtifactError(
            f"Could not find {MANIFEST} in {root}: not an artifact directory, or a partial write"
        )
    raw = path.read_bytes()
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{path}: corrupt manifest (invalid JSON at line {e.lineno})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ArtifactError(f"{path}: expected format {FORMAT!r}, got {data.get('format')!r}")
    for key in ("version", "models", "files"):
        if key not in data:
            raise ArtifactError(f"{path}: manifest has no {key!r}")
    files: dict[str, str] = data["files"]
    for m in data["models"]:
        for name in ("card.json", "adapter.npz"):
            if f"{model_dir(m)}/{name}" not in files:
                raise ArtifactError(f"{path}: model {m!r} has no {name} in the manifest")
    for name in ("model.onnx", "tokenizer.json", "encoder.json"):
        if f"{ENCODER_DIR}/{name}" not in files:
            raise ArtifactError(f"{path}: the manifest lists no {ENCODER_DIR}/{name}")
    if verify:
        for rel, expected in files.items():
            p = root / rel
            if not p.is_file():
                raise ArtifactError(f"{root}: {rel} is listed in the manifest but missing")
            got = sha256_file(p)
            if got != expected:
                raise ArtifactError(
                    f"{root}: {rel} is corrupt: sha256 {got[:12]}… does not match the manifest's "
                    f"{expected[:12]}…"
                )
    return Manifest(root=root, data=data, sha256=hashlib.sha256(raw).hexdigest())
