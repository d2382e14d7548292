"""Fresh host buffers the codec fills (nzdist/codec/hostmem.py) are huge-page backed, and hold the right values."""

from pathlib import Path

import pytest
import torch

import nzdist
from nzdist import _C
from nzdist.codec import hostmem

THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def _thp_usable() -> bool:
    return THP.exists() and "[never]" not in THP.read_text()


def _flags_over(lo: int, hi: int) -> list[list[str]]:
    """VmFlags of every mapping that overlaps [lo, hi), from /proc/self/smaps."""
    out, inside = [], False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()[0]
        if "-" in head and not head.endswith(":"):
            a, b = (int(x, 16) for x in head.split("-"))
            inside = a < hi and lo < b
        elif inside and line.startswith("VmFlags:"):
            out.append(line.split()[1:])
    return out


def test_small_buffers_are_left_alone():
    t = torch.empty(1024, dtype=torch.uint8)
    assert _C.advise_huge_pages(t.data_ptr(), t.numel()) == 0  # holds no whole 2 MiB page
    assert hostmem.empty((1024,), torch.bfloat16).shape == (1024,)


@pytest.mark.skipif(not _thp_usable(), reason="transparent huge pages are off or absent on this machine")
def test_decompress_output_is_advised_huge_pages_and_round_trips():
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(8 << 20, generator=g) * 0.02).to(torch.bfloat16)  # 16 MiB decoded
    ct = nzdist.compress(x, codec=nzdist.Lossless(), threads=1)
    y = nzdist.decompress(ct, threads=1)
    assert torch.equal(y.view(torch.int16), x.view(torch.int16))
    # The advice is on the mapping (VmFlags "hg"): whether the kernel then finds free huge pages, and whether this
    # buffer was fresh at all (the allocator may hand back touched memory), depends on the machine's state.
    huge = 2 << 20
    lo = (y.data_ptr() + huge - 1) // huge * huge
    hi = (y.data_ptr() + y.numel() * 2) // huge * huge
    flags = _flags_over(lo, hi)
    assert flags and all("hg" in f for f in flags), flags
    advised = _C.advise_huge_pages(y.data_ptr(), y.numel() * 2)
    assert advised == hi - lo and advised % huge == 0
