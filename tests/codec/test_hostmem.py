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


def _huge_kib_over(ptr: int, nbytes: int) -> int:
    """AnonHugePages of the mappings that overlap [ptr, ptr + nbytes), from /proc/self/smaps."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()[0]
        if "-" in head and not head.endswith(":"):
            lo, hi = (int(x, 16) for x in head.split("-"))
            inside = lo < ptr + nbytes and ptr < hi
        elif inside and line.startswith("AnonHugePages:"):
            total += int(line.split()[1])
    return total


def test_small_buffers_are_left_alone():
    t = torch.empty(1024, dtype=torch.uint8)
    assert _C.advise_huge_pages(t.data_ptr(), t.numel()) == 0  # holds no whole 2 MiB page
    assert hostmem.empty((1024,), torch.bfloat16).shape == (1024,)


@pytest.mark.skipif(not _thp_usable(), reason="transparent huge pages are off or absent on this machine")
def test_decompress_output_uses_huge_pages_and_round_trips():
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(8 << 20, generator=g) * 0.02).to(torch.bfloat16)  # 16 MiB decoded
    ct = nzdist.compress(x, codec=nzdist.Lossless(), threads=1)
    y = nzdist.decompress(ct, threads=1)
    assert torch.equal(y.view(torch.int16), x.view(torch.int16))
    assert _huge_kib_over(y.data_ptr(), y.numel() * 2) >= 2048  # at least one 2 MiB page backs it
    advised = _C.advise_huge_pages(y.data_ptr(), y.numel() * 2)
    assert advised > 0 and advised % (2 << 20) == 0
