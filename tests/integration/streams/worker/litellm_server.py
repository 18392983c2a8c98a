"""A real OpenAI-compatible server that this project did not write: LiteLLM's proxy, from PyPI,
answering mock responses (``mock_response`` per model: a text, or an error it raises).

It is installed once into a venv of its own under the project's cache dir (its pins would clash
with ours), ``<cache>/litellm-<version>``, and started as a subprocess on a free port.

Why not ``litellm[proxy]``: from 1.110 that extra requires ``litellm-proxy``, which is not on
PyPI (nor the extra's pinned ``litellm-proxy-extras`` and ``litellm-enterprise``, which the mock
proxy does not need), so pip cannot resolve it. The extra's other requirements are listed here.
A fresh install takes about 100 s (measured on the 2-core test machine); later sessions reuse it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from ipr_model.artifacts.cache import cache_dir
from streams.kafka.local import free_port

VERSION = "1.110.2"
# litellm 1.110.2's `proxy` extra, without litellm-proxy, litellm-proxy-extras, litellm-enterprise
PROXY_REQUIREMENTS = [
    "apscheduler>=3.11.2,<4.0", "azure-identity>=1.25.2,<2.0", "azure-storage-blob>=12.28.0,<13.0",
    "backoff>=2.2.1,<3.0", "backports-zstd>=1.0.0,<2.0", "boto3>=1.43.117,<2.0",
    "cryptography>=49.0.0,<51.0", "expression>=5.6.0,<6.0", "fastapi-sso>=0.19.0,<1.0",
    "fastapi>=0.136.3,<1.0", "granian>=2.7.4,<3.0", "gunicorn>=23.0.0,<24.0",
    "hiredis>=3.0.0,<4.0", "httpx2>=2.10.0,<3", "inquirerpy>=0.3.4,<1.0", "mcp>=2.3.0,<3",
    "orjson>=3.11.6,<4.0", "polars>=1.38.1,<2.0", "pydantic>=2.12.0,<3", "pyjwt>=2.13.0,<3.0",
    "pynacl>=1.6.2,<2.0", "pyroscope-io>=0.8.16,<1.0", "python-multipart>=0.0.27,<1.0",
    "pyyaml>=6.0.3,<7.0", "restrictedpython>=8.5,<9.0", "rich>=13.9.4,<14.0", "rq>=2.7.0,<3.0",
    "semver>=3.0.4,<4", "soundfile>=0.12.1,<1.0", "starlette>=1.0.1,<2.0",
    "tomlkit>=0.13.3,<1.0", "uvicorn>=0.33.0,<1.0", "uvloop>=0.22.1,<1.0",
    "websockets>=15.0.1,<16.0",
]
_OFFLINE = ("NewConnectionError", "Failed to establish a new connection", "Network is unreachable",
            "Temporary failure in name resolution", "Name or service not known", "ConnectTimeout")
START_TIMEOUT_S = 180.0


def install() -> Path:
    """The ``litellm`` executable of the cached venv, installed first if needed; skips the test
    when PyPI cannot be reached."""
    venv = cache_dir() / f"litellm-{VERSION}"
    exe = venv / "bin" / "litellm"
    done = venv / ".ipr-installed"
    if done.exists() and exe.exists():
        return exe
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    began = time.monotonic()
    pip = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
         f"litellm=={VERSION}", *PROXY_REQUIREMENTS],
        capture_output=True, text=True,
    )
    if pip.returncode != 0:
        out = pip.stdout + pip.stderr
        if any(sign in out for sign in _OFFLINE):
            pytest.skip(f"PyPI is unreachable, so LiteLLM {VERSION} cannot be installed: "
                        f"{out.strip().splitlines()[-1]}")
        raise RuntimeError(f"pip could not install litellm {VERSION} into {venv}:\n{out[-3000:]}")
    done.write_text(f"installed in {time.monotonic() - began:.0f} s\n")
    return exe


def model_entry(name: str, mock: str, **params: object) -> dict:
    """A model of the config answered by ``mock``: a text, or "litellm.RateLimitError",
    "litellm.InternalServerError" (what LiteLLM raises instead of answering)."""
    return {"model_name": name, "litellm_params": {
        "model": f"openai/{name}", "api_key": "unused", "mock_response": mock, **params}}


@contextlib.contextmanager
def serve(exe: Path, models: list[dict], tmp: Path, **router_settings: object) -> Iterator[
        tuple[str, str]]:
    """Run the proxy on ``models``; yields (base_url ending in /v1, api key)."""
    key = "sk-ipr-" + secrets.token_hex(16)
    config = {"model_list": models, "litellm_settings": {"num_retries": 0},
              "general_settings": {"master_key": key}}
    if router_settings:
        config["router_settings"] = router_settings
    path = tmp / "litellm.yaml"
    path.write_bytes(orjson.dumps(config))  # JSON is YAML
    port = free_port()
    log = (tmp / "litellm.log").open("wb")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI", "LITELLM"))}
    proc = subprocess.Popen(
        [str(exe), "--config", str(path), "--host", "127.0.0.1", "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, env=env | {"NO_DOCS": "True"},
    )
    try:
        _wait_ready(f"http://127.0.0.1:{port}", proc, tmp / "litellm.log")
        yield f"http://127.0.0.1:{port}/v1", key
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _wait_ready(url: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"litellm exited with {proc.returncode}:\n"
                               f"{log.read_text(errors='replace')[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/health/liveliness", timeout=2).status_code == 200:
                return
        time.sleep(0.5)
    raise RuntimeError(f"litellm did not answer on {url} within {START_TIMEOUT_S:.0f} s:\n"
                       f"{log.read_text(errors='replace')[-3000:]}")
