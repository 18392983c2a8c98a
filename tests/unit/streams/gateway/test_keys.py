"""API keys: stored as sha256 hashes, mapped to tenants; a missing or wrong key is 401."""

from __future__ import annotations

import hashlib
import json
import stat

import pytest

from streams.gateway.errors import ApiError
from streams.gateway.keys import KeysFileError, add_key, key_hash, read_keys, tenant_of


def test_a_new_key_is_stored_as_its_hash_only(tmp_path):
    path = tmp_path / "keys.json"
    key = add_key(path, "acme")
    other = add_key(path, "globex")
    text = path.read_text()
    assert key not in text and other not in text
    assert key_hash(key) == hashlib.sha256(key.encode()).hexdigest() in text
    assert read_keys(path) == {key_hash(key): "acme", key_hash(other): "globex"}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_requests_get_their_keys_tenant(tmp_path):
    path = tmp_path / "keys.json"
    key = add_key(path, "acme")
    keys = read_keys(path)
    assert tenant_of(f"Bearer {key}", keys) == "acme"
    assert tenant_of(None, None) is None  # no keys file: no key asked


@pytest.mark.parametrize("header", [None, "", "Bearer ", "Basic abc", "Bearer sk-ipr-wrong"])
def test_a_missing_or_wrong_key_is_401(tmp_path, header):
    keys = read_keys(tmp_path / "absent.json") | {key_hash("sk-ipr-right"): "acme"}
    with pytest.raises(ApiError) as e:
        tenant_of(header, keys)
    assert (e.value.status, e.value.code) == (401, "invalid_api_key")
    assert "wrong" not in e.value.message


def test_a_broken_file_or_tenant_is_refused(tmp_path):
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({"keys": [{"sha256": "xyz", "tenant": "a"}]}))
    with pytest.raises(KeysFileError):
        read_keys(path)
    with pytest.raises(KeysFileError):
        add_key(tmp_path / "k2.json", "  ")
