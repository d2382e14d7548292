"""Per-rank counters of what compression saves on the wire.

Integrations (FSDP2, ZeRO-3) call :func:`record_all_gather` once per all-gather with the payload bytes this rank
sent and the bytes a dense all-gather of the same tensors would have sent, and :func:`record_h2d` for every
host -> device copy of offloaded parameters (payload bytes against dense bytes). ``memory_report`` lives with each
integration (it needs to know where shards are kept) and is re-exported from the package root.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass


@dataclass
class CommStats:
    all_gathers: int = 0
    payload_bytes: int = 0  # compressed bytes this rank contributed (capacity-padded, as sent)
    dense_bytes: int = 0  # what the same all-gathers would have sent uncompressed
    h2d_bytes: int = 0  # bytes copied host -> device for parameters (offloaded shards before their all-gather)
    h2d_dense_bytes: int = 0  # what the same copies would have moved uncompressed

    @property
    def ratio(self) -> float:
        return self.payload_bytes / self.dense_bytes if self.dense_bytes else float("nan")

    def as_dict(self) -> dict:
        return {**asdict(self), "ratio": self.ratio}


_lock = threading.Lock()
_stats = CommStats()


def record_all_gather(payload_bytes: int, dense_bytes: int) -> None:
    with _lock:
        _stats.all_gathers += 1
        _stats.payload_bytes += int(payload_bytes)
        _stats.dense_bytes += int(dense_bytes)


def record_h2d(payload_bytes: int, dense_bytes: int) -> None:
    """One host -> device copy of a parameter's bytes (offload): what crossed, and what would have, dense."""
    with _lock:
        _stats.h2d_bytes += int(payload_bytes)
        _stats.h2d_dense_bytes += int(dense_bytes)


def comm_stats(reset: bool = False) -> CommStats:
    """All-gather bytes this rank sent, and the dense bytes the same all-gathers would have sent.

    >>> s = nzdist.comm_stats(); print(s.payload_bytes / s.dense_bytes)
    """
    global _stats
    with _lock:
        snapshot = CommStats(**asdict(_stats))
        if reset:
            _stats = CommStats()
    return snapshot
