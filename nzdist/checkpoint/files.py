"""Reading a published checkpoint: its verified metadata, its records, and — for delta checkpoints — the chain
of bases behind it. Every byte read is checked against the size and crc32 the writer recorded, and every error
names the file it is about."""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path

import torch
from torch.distributed.checkpoint.metadata import Metadata, MetadataIndex, TensorStorageMetadata

from . import atomic, records
from .format import DEPENDENTS_DIR, METADATA_NAME, CheckpointError, ChecksumError, Manifest, Record, unpack_metadata


class CheckpointInUseError(CheckpointError):
    """Deleting or replacing a checkpoint that a delta checkpoint still needs."""


def live_dependents(path: str | os.PathLike) -> list[str]:
    """Delta checkpoints written against ``path`` that still exist and still name it as their base."""
    path = Path(path).absolute()
    _, man = read_metadata(path)
    live = []
    d = path / DEPENDENTS_DIR
    for entry in sorted(d.glob("*.json")) if d.is_dir() else []:
        try:
            ref = json.loads(entry.read_text())
            _, dep = read_metadata(ref["path"])
        except (CheckpointError, OSError, ValueError, KeyError):
            continue  # the dependent is gone (deleted, or its save never published)
        if dep.base is not None and dep.base.checkpoint_id == man.checkpoint_id:
            live.append(ref["path"])
    return live


def read_metadata(path: str | os.PathLike) -> tuple[Metadata, Manifest]:
    path = Path(path)
    meta = path / METADATA_NAME
    if not meta.is_file():
        if not path.exists():
            raise CheckpointError(f"no checkpoint at {path}{atomic.recover_hint(path)}")
        raise CheckpointError(f"{path} is not a complete nzdist checkpoint: {meta} is missing")
    payload = unpack_metadata(meta.read_bytes(), str(meta))
    return payload["dcp"], payload["manifest"]


class Checkpoint:
    """An open checkpoint. ``read_tensor(index)`` decodes one saved chunk, following the delta chain."""

    def __init__(self, path: str | os.PathLike, expect_id: str | None = None, _depth: int = 0):
        self.path = Path(path)
        self.metadata, self.manifest = read_metadata(self.path)
        if expect_id is not None and self.manifest.checkpoint_id != expect_id:
            raise CheckpointError(
                f"{self.path} was replaced: a delta checkpoint needs checkpoint id {expect_id}, "
                f"found {self.manifest.checkpoint_id}"
            )
        self._depth = _depth
        self._files: dict[str, object] = {}
        self._base: Checkpoint | None = None
        self._chunks: dict[MetadataIndex, tuple[torch.dtype, torch.Size]] = {}
        for fqn, md in self.metadata.state_dict_metadata.items():
            if isinstance(md, TensorStorageMetadata):
                for c in md.chunks:
                    self._chunks[MetadataIndex(fqn, c.offsets)] = (md.properties.dtype, torch.Size(c.sizes))

    # -- plumbing -------------------------------------------------------------------------------------------
    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()
        if self._base is not None:
            self._base.close()

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _file(self, name: str):
        f = self._files.get(name)
        if f is None:
            p = self.path / name
            if not p.is_file():
                raise CheckpointError(f"{p}: data file missing")
            expected = self.manifest.files.get(name, (None, None))[0]
            actual = p.stat().st_size
            if expected is not None and actual != expected:
                raise ChecksumError(
                    f"{p}: size {actual} bytes, the checkpoint recorded {expected} (truncated or overwritten)"
                )
            f = self._files[name] = open(p, "rb", buffering=0)
        return f

    def base(self) -> Checkpoint:
        if self._base is None:
            ref = self.manifest.base
            if ref is None:
                raise CheckpointError(f"{self.path} is a full checkpoint and has no base")
            rel = (self.path / ref.relative_path).resolve()
            cand = rel if (rel / METADATA_NAME).is_file() else Path(ref.absolute_path)
            if not (cand / METADATA_NAME).is_file():
                raise CheckpointError(
                    f"{self.path} is a delta checkpoint; its base {rel} (also looked at {ref.absolute_path}) is missing"
                )
            self._base = Checkpoint(cand, expect_id=ref.checkpoint_id, _depth=self._depth + 1)
        return self._base

    # -- records --------------------------------------------------------------------------------------------
    def record(self, index: MetadataIndex) -> Record | None:
        return self.metadata.storage_data.get(index)

    def chunk_info(self, index: MetadataIndex) -> tuple[torch.dtype, torch.Size] | None:
        return self._chunks.get(index)

    def read_record(self, rec: Record) -> torch.Tensor:
        """The record's bytes as a uint8 tensor, verified."""
        f = self._file(rec.relative_path)
        buf = torch.empty(rec.length, dtype=torch.uint8)
        if rec.length:
            f.seek(rec.offset)
            got = f.readinto(memoryview(buf.numpy()))
            if got != rec.length:
                raise ChecksumError(
                    f"{self.path / rec.relative_path}: truncated: record at offset {rec.offset} "
                    f"needs {rec.length} bytes, read {got}"
                )
        if zlib.crc32(buf.numpy()) != rec.crc32:
            raise ChecksumError(
                f"{self.path / rec.relative_path}: checksum mismatch in the record at offset "
                f"{rec.offset} ({rec.length} bytes): file corrupted"
            )
        return buf

    def read_bytes(self, index: MetadataIndex) -> bytes:
        rec = self._need(index)
        return self.read_record(rec).numpy().tobytes()

    def _need(self, index: MetadataIndex) -> Record:
        rec = self.record(index)
        if rec is None:
            raise CheckpointError(f"{self.path}: no record for {index.fqn} at offset {tuple(index.offset or ())}")
        return rec

    def read_tensor(self, index: MetadataIndex, out: torch.Tensor | None = None) -> torch.Tensor:
        """Decode the saved chunk ``index`` (into ``out`` when given and the encoding allows)."""
        rec = self._need(index)
        dtype, shape = self._chunks[index]
        base = None
        if rec.encoding in records.BASED:
            if self._depth > 10_000:
                raise CheckpointError(f"{self.path}: delta chain too long or cyclic")
            base = self.base().read_tensor(index)
        data = self.read_record(rec)
        try:
            return records.decode(rec.encoding, data, dtype, shape, base, out)
        except (ValueError, RuntimeError) as e:
            raise ChecksumError(f"{self.path / rec.relative_path}: cannot decode {index.fqn}: {e}") from e
