"""Counters of the codec's work and of its host synchronisations, the same on CPU and GPU.

``host_syncs`` counts every read of device-written data the codec's host side needs: an encode's size read, an
error-word read, a capacity or overflow agreement read. On the CPU nothing waits, but the same reads are counted
where the GPU path would make them, so CPU tests bound what a GPU run will stall on. Every such read goes through
:func:`read_back`, the only place the integrations read device memory on the training path.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass

import torch


@dataclass
class CodecStats:
    decode_calls: int = 0  # batched decodes (one per all-gather of a parameter; one CUDA launch each)
    encode_calls: int = 0  # batched encodes (one per optimizer step batch)
    host_syncs: int = 0  # reads of device-written data (see the module docstring)

    def as_dict(self) -> dict:
        return asdict(self)


_lock = threading.Lock()
_stats = CodecStats()


def count(*, decode: int = 0, encode: int = 0, syncs: int = 0) -> None:
    with _lock:
        _stats.decode_calls += decode
        _stats.encode_calls += encode
        _stats.host_syncs += syncs


def codec_stats(reset: bool = False) -> CodecStats:
    """Decode calls, encode calls and host synchronisations so far in this process.

    >>> nzdist.codec_stats(reset=True); train_step(); print(nzdist.codec_stats().as_dict())
    """
    global _stats
    with _lock:
        snapshot = CodecStats(**asdict(_stats))
        if reset:
            _stats = CodecStats()
    return snapshot


def upload(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A small host-built tensor (indices, a slot header) on ``device`` without waiting: through pinned memory with
    ``non_blocking`` on a GPU (a plain ``.to(device)`` or ``torch.tensor(..., device=...)`` from pageable memory
    synchronises the stream); unchanged on the CPU."""
    if torch.device(device).type != "cuda":
        return t
    return t.pin_memory().to(device, non_blocking=True)


def read_back(t: torch.Tensor) -> list:
    """``t``'s values on the host, counted as one host synchronisation (on a GPU: the stream is waited for)."""
    count(syncs=1)
    return t.detach().cpu().tolist()
