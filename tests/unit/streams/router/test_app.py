"""The router process's malloc cap: applied on glibc, left to the user when they set it."""

import subprocess
import sys

CHECK = "from streams.router.app import cap_malloc_arenas; print(cap_malloc_arenas())"


def _run(env: dict) -> str:
    return subprocess.run([sys.executable, "-c", CHECK], env=env, capture_output=True,
                          text=True, check=True).stdout.strip()


def test_the_arenas_are_capped_unless_malloc_arena_max_is_set() -> None:
    assert _run({"PATH": ""}) == "True"  # glibc (Linux, CI): mallopt accepted the cap
    assert _run({"PATH": "", "MALLOC_ARENA_MAX": "4"}) == "False"
