"""On-disk layout of an nzdist checkpoint: what every file and every record is.

A checkpoint is a directory, published by a rename once complete::

    PATH/
      .metadata          MAGIC | u32 crc32(body) | u64 len(body) | body = pickle({"dcp": Metadata,
                         "manifest": Manifest}); written last — a directory without it is not a checkpoint
      __{rank}_0.nzd     one data file per rank: records back to back, no framing (the records' places, sizes
                         and crc32s live in the metadata, so a reader seeks straight to what it needs)
      .dependents/       one small JSON per delta checkpoint built on this one (see delta.py); not checksummed,
                         it only guards ``delete``

Each DCP item (a tensor chunk one rank holds, or a pickled object) is one record, described by a ``Record`` in
``Metadata.storage_data``. ``Record.encoding`` says how the bytes turn back into the item:

    raw    the item's bytes as they are (non-float tensors, torch.save'd objects)
    nz     an nzdist payload (``nzdist.CompressedTensor.to_bytes``), lossless or ``nzdist.Lossy``
    q      a lossy.py payload (quantised, see lossy.py), reconstructed against zeros
    qd     a lossy.py payload reconstructed against the same item of the base checkpoint
    dx     a delta.py payload: the item's bit patterns minus the base item's, entropy coded
    same   nothing stored: the item equals the same item of the base checkpoint bit for bit
"""

from __future__ import annotations

import pickle
import struct
import zlib
from dataclasses import dataclass, field

MAGIC = b"NZDCKPT1"
FORMAT_VERSION = 1
METADATA_NAME = ".metadata"
DEPENDENTS_DIR = ".dependents"
DATA_SUFFIX = ".nzd"
_HEADER = struct.Struct("<8sIQ")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete, corrupted, or refers to a base that is gone."""


class ChecksumError(CheckpointError):
    """A file's bytes do not match the checksum or size the metadata recorded for them."""


@dataclass
class Record:
    """Where one DCP item lives and how it is encoded. Pickled inside ``Metadata.storage_data``."""

    relative_path: str
    offset: int
    length: int
    crc32: int
    encoding: str
    dense_nbytes: int  # what the item occupies decoded (for ratios in `nzdist ckpt inspect`)
    kind: str = ""  # "weight", "exp_avg", "exp_avg_sq", "other": how lossy.py treated it


@dataclass
class BaseRef:
    """The checkpoint a delta checkpoint was written against."""

    relative_path: str  # relative to the delta's own directory, so a tree of checkpoints can move together
    absolute_path: str
    checkpoint_id: str


@dataclass
class Manifest:
    checkpoint_id: str
    codec: str  # repr of the codec, for inspect
    base: BaseRef | None = None
    chain_depth: int = 0  # 0 for a full checkpoint, base's depth + 1 for a delta
    files: dict[str, tuple[int, int]] = field(default_factory=dict)  # data file -> (size, crc32)
    format_version: int = FORMAT_VERSION


def pack_metadata(payload: dict) -> bytes:
    body = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(MAGIC, zlib.crc32(body), len(body)) + body


def unpack_metadata(buf: bytes, name: str) -> dict:
    if len(buf) < _HEADER.size:
        raise ChecksumError(f"{name}: truncated ({len(buf)} bytes, header needs {_HEADER.size})")
    magic, crc, length = _HEADER.unpack_from(buf)
    if magic != MAGIC:
        raise CheckpointError(f"{name}: not an nzdist checkpoint metadata file (magic {magic!r})")
    body = memoryview(buf)[_HEADER.size :]
    if len(body) != length:
        raise ChecksumError(f"{name}: truncated or padded: body is {len(body)} bytes, header says {length}")
    if zlib.crc32(body) != crc:
        raise ChecksumError(f"{name}: checksum mismatch (file corrupted)")
    payload = pickle.loads(body)
    if payload["manifest"].format_version > FORMAT_VERSION:
        raise CheckpointError(
            f"{name}: format version {payload['manifest'].format_version} is newer than "
            f"this nzdist reads ({FORMAT_VERSION})"
        )
    return payload
