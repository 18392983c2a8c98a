"""The router process's malloc settings: applied on glibc, left to the user when they set them."""

import subprocess
import sys

CHECK = "from streams.router.app import cap_malloc_arenas; print(cap_malloc_arenas())"

# A hot swap frees a version's arrays, then loads the next one's: are they still mappings of their
# own (given back whole when freed), or do they land in the arenas among the batches' buffers?
MAPPED_AFTER_A_SWAP = """
import ctypes, sys, numpy as np
from streams.router.app import fix_mmap_threshold
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info
fixed = fix_mmap_threshold() if sys.argv[1:] == ["fix"] else None
old = np.ones(4 << 20, np.uint8)  # the old version's kNN memory, say
del old  # freed by the swap: glibc would raise its mmap threshold past 4 MB
before = libc.mallinfo2().hblks
new = [np.ones(1 << 20, np.uint8) for _ in range(8)]  # the next version's arrays
print(fixed, libc.mallinfo2().hblks - before)
"""


def _run(env: dict, code: str = CHECK, *args: str) -> str:
    return subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True,
                          text=True, check=True).stdout.strip()


def test_the_arenas_are_capped_unless_malloc_arena_max_is_set() -> None:
    assert _run({"PATH": ""}) == "True"  # glibc (Linux, CI): mallopt accepted the cap
    assert _run({"PATH": "", "MALLOC_ARENA_MAX": "4"}) == "False"


def test_a_freed_version_does_not_move_the_next_ones_arrays_into_the_arenas() -> None:
    assert _run({"PATH": ""}, MAPPED_AFTER_A_SWAP, "fix") == "True 8"  # a mapping each
    # glibc's default, which the router had: the threshold follows the block freed
    assert _run({"PATH": ""}, MAPPED_AFTER_A_SWAP) == "None 0"
    # the user's own setting is left to glibc
    assert _run({"PATH": "", "MALLOC_MMAP_THRESHOLD_": "131072"}, MAPPED_AFTER_A_SWAP,
                "fix") == "False 8"
