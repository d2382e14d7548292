"""DeepSpeed checkpoint engine that writes nzdist-compressed, checksummed files.

DeepSpeed (0.19) hands its checkpoint engine one ``(state_dict, path)`` per file — model states, each rank's
ZeRO partition of the optimizer — and reads them back with ``load(path)``. This engine replaces every float
tensor of 256 bytes or more in that object tree by its nzdist payload, torch.save's the tree, and frames the
result as ``MAGIC | u32 crc32 | u64 length | body`` in a file written to a temporary name, fsynced and renamed
into place. Wire it in after ``deepspeed.initialize``::

    engine.checkpoint_engine = NzdistCheckpointEngine(codec=nzdist.Lossless())
"""

from __future__ import annotations

import io
import os
import struct
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch
from deepspeed.runtime.checkpoint_engine.checkpoint_engine import CheckpointCommitInfo, CheckpointEngine

import nzdist.codec as nzcodec
from nzdist.checkpoint import atomic
from nzdist.checkpoint.format import CheckpointError, ChecksumError

MAGIC = b"NZDSENG1"
_HEADER = struct.Struct("<8sIQ")
_MIN_BYTES = 256
_FLOATS = (torch.bfloat16, torch.float16, torch.float32)


@dataclass
class _Packed:
    """A float tensor stored as an nzdist payload inside the pickled tree."""

    payload: torch.Tensor  # 1-D uint8
    requires_grad: bool


def _pack(obj, codec):
    if isinstance(obj, torch.Tensor):
        t = obj.detach()
        if t.dtype in _FLOATS and t.numel() * t.element_size() >= _MIN_BYTES and t.layout == torch.strided:
            ct = nzcodec.compress(t.cpu().contiguous(), codec=codec)
            return _Packed(ct.data.clone(), bool(obj.requires_grad))
        return obj
    if isinstance(obj, dict):
        return (
            type(obj)((k, _pack(v, codec)) for k, v in obj.items())
            if type(obj) is not dict
            else {k: _pack(v, codec) for k, v in obj.items()}
        )
    if isinstance(obj, list):
        return [_pack(v, codec) for v in obj]
    if isinstance(obj, tuple) and not hasattr(obj, "_fields"):
        return tuple(_pack(v, codec) for v in obj)
    return obj


def _unpack(obj, map_location):
    if isinstance(obj, _Packed):
        t = nzcodec.decompress(nzcodec.CompressedTensor.from_bytes(obj.payload), verify=True)
        if map_location is not None and not callable(map_location) and not isinstance(map_location, dict):
            t = t.to(map_location)
        return t.requires_grad_(obj.requires_grad) if obj.requires_grad else t
    if isinstance(obj, dict):
        return (
            {k: _unpack(v, map_location) for k, v in obj.items()}
            if type(obj) is dict
            else type(obj)((k, _unpack(v, map_location)) for k, v in obj.items())
        )
    if isinstance(obj, list):
        return [_unpack(v, map_location) for v in obj]
    if isinstance(obj, tuple) and not hasattr(obj, "_fields"):
        return tuple(_unpack(v, map_location) for v in obj)
    return obj


class NzdistCheckpointEngine(CheckpointEngine):
    """``engine.checkpoint_engine = NzdistCheckpointEngine()``: ``save_checkpoint``/``load_checkpoint`` then
    write and read compressed, checksummed files (lossless by default, ``codec=nzdist.Lossy(...)`` opt-in)."""

    def __init__(self, config_params=None, codec=None, mantissa_bits: int = 3, block_size: int = 512):
        """``codec``: an nzdist codec, or (from a JSON ``"neuzip": {"checkpoint": {...}}`` section) the string
        ``"lossless"`` (default) or ``"lossy"`` with ``mantissa_bits``/``block_size``."""
        super().__init__(config_params)
        self.name = "NzdistCheckpointEngine"
        if codec is None or codec == "lossless":
            codec = nzcodec.Lossless()
        elif codec == "lossy":
            codec = nzcodec.Lossy(mantissa_bits=mantissa_bits, block_size=block_size)
        elif not isinstance(codec, (nzcodec.Lossless, nzcodec.Lossy)):
            raise ValueError(f'checkpoint codec must be "lossless", "lossy" or an nzdist codec, got {codec!r}')
        self.codec = codec

    def create(self, info: CheckpointCommitInfo):
        pass

    def save(self, state_dict, path: str):
        buf = io.BytesIO()
        torch.save(_pack(state_dict, self.codec), buf)
        body = buf.getbuffer()
        path = Path(path)
        tmp = path.parent / f".{path.name}.nzdist-tmp-{uuid.uuid4().hex[:12]}"
        try:
            with open(tmp, "wb") as f:
                f.write(_HEADER.pack(MAGIC, zlib.crc32(body), len(body)))
                f.write(body)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)  # a crash leaves the old file or the new one, never half of one
        finally:
            if tmp.exists():
                tmp.unlink()
        atomic.fsync_path(path.parent)

    def load(self, path: str, map_location=None):
        with open(path, "rb") as f:
            raw = f.read()
        if len(raw) < _HEADER.size:
            raise ChecksumError(f"{path}: truncated ({len(raw)} bytes)")
        magic, crc, length = _HEADER.unpack_from(raw)
        if magic != MAGIC:  # a checkpoint DeepSpeed's own engine wrote: read it as DeepSpeed would
            return torch.load(path, map_location=map_location, weights_only=False)
        body = memoryview(raw)[_HEADER.size :]
        if len(body) != length:
            raise ChecksumError(f"{path}: truncated: {len(body)} of {length} bytes")
        if zlib.crc32(body) != crc:
            raise ChecksumError(f"{path}: checksum mismatch (file corrupted)")
        try:
            tree = torch.load(io.BytesIO(body), map_location=map_location, weights_only=False)
            return _unpack(tree, map_location)
        except (nzcodec.FormatError, RuntimeError, ValueError) as e:
            raise CheckpointError(f"{path}: cannot decode: {e}") from e

    def commit(self, info: CheckpointCommitInfo):
        return True

    def preserves_storage_sharing(self):
        # Every tensor is re-encoded from a contiguous copy, so DeepSpeed need not clone views first.
        return False
