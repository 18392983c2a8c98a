"""API keys and their tenants: a JSON file of sha256 hashes (a key itself is never stored nor
logged). ``ipr gateway add-key --tenant T`` makes a key, prints it once and stores its hash.

The file: ``{"keys": [{"sha256": "<hex>", "tenant": "<tenant>", "created_at": <epoch s>}]}``.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import time
from pathlib import Path

from schemas.errors import IprError
from schemas.fields import Tenant
from streams.gateway.errors import ApiError

KEY_PREFIX = "sk-ipr-"


class KeysFileError(IprError, ValueError):
    """The keys file cannot be read or does not hold what it should."""


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def read_keys(path: Path) -> dict[str, str]:
    """The tenants by key hash; an absent file holds no key."""
    if not path.exists():
        return {}
    try:
        entries = json.loads(path.read_text())["keys"]
        out = {e["sha256"]: e["tenant"] for e in entries}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise KeysFileError(f"{path}: expected {{\"keys\": [{{\"sha256\", \"tenant\"}}, ...]}} "
                            f"({type(e).__name__})") from None
    bad = [h for h in out if len(h) != 64 or any(c not in "0123456789abcdef" for c in h)]
    if bad:
        raise KeysFileError(f"{path}: {len(bad)} entries whose sha256 is not 64 hex digits")
    return out


def add_key(path: Path, tenant: str) -> str:
    """A new key for ``tenant``: its hash appended to the file (created 0600), the key
    returned (to be shown once)."""
    from pydantic import TypeAdapter, ValidationError

    try:
        TypeAdapter(Tenant).validate_python(tenant)
    except ValidationError:
        raise KeysFileError(f"tenant must be 1 to 200 characters, not blank, got "
                            f"{tenant[:40]!r}") from None
    read_keys(path)  # refuse to extend a broken file
    entries = json.loads(path.read_text())["keys"] if path.exists() else []
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    entries.append({"sha256": key_hash(key), "tenant": tenant, "created_at": int(time.time())})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"keys": entries}, f, indent=1)
    os.replace(tmp, path)
    return key


def tenant_of(authorization: str | None, keys: dict[str, str] | None) -> str | None:
    """The tenant of a request's ``Authorization: Bearer <key>``; None without a keys file; 401
    for a missing or unknown key."""
    if keys is None:
        return None
    scheme, _, key = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise ApiError(401, "an API key is required: expected the header 'Authorization: "
                       "Bearer <key>'", code="invalid_api_key")
    tenant = keys.get(key_hash(key.strip()))
    if tenant is None:
        raise ApiError(401, "the API key is not valid (keys come from `ipr gateway add-key`)",
                       code="invalid_api_key")
    return tenant
