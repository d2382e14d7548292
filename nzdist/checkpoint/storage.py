"""DCP ``StorageWriter``/``StorageReader`` that store float tensors through the nzdist codec (or the lossy and
delta encodings) and everything else as it is.

DCP plans which rank writes which chunk and reshards on load; these classes only decide how a chunk becomes
bytes and where the bytes go. The coordinator picks one temporary directory per save and hands it to every rank
through the global plan; every rank writes and fsyncs its own data file there; the coordinator's ``finish``
writes the metadata last and publishes the directory with one rename (atomic.py).
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import uuid
import zlib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.distributed._shard._utils import narrow_tensor_by_index
from torch.distributed.checkpoint.metadata import Metadata, MetadataIndex
from torch.distributed.checkpoint.planner import (
    LoadItemType,
    LoadPlan,
    LoadPlanner,
    SavePlan,
    SavePlanner,
    WriteItemType,
)
from torch.distributed.checkpoint.storage import StorageReader, StorageWriter, WriteResult
from torch.futures import Future

import nzdist.codec as nzcodec

from . import atomic, records
from .files import Checkpoint, CheckpointInUseError, live_dependents, read_metadata
from .format import DATA_SUFFIX, DEPENDENTS_DIR, MAGIC, METADATA_NAME, BaseRef, Manifest, Record, pack_metadata

_FILE_KEY = "\x00nzdist-file:"  # WriteResult index of a per-file summary; never a real state-dict key


@dataclass(frozen=True)
class _RankPlan:
    prefix: str
    tmp_dir: str
    base_path: str | None


class NzdistStorageWriter(StorageWriter):
    """``dcp.save(sd, storage_writer=NzdistStorageWriter(path, codec=nzdist.Lossless()))``.

    ``previous``: an earlier checkpoint to store deltas against (None: full save). ``full_every``: when the
    delta chain behind ``previous`` already holds ``full_every - 1`` deltas, write a full checkpoint instead.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        codec=None,
        previous: str | os.PathLike | None = None,
        full_every: int = 8,
        overwrite: bool = True,
        sync_files: bool = True,
    ):
        super().__init__()
        if not isinstance(full_every, int) or full_every < 1:
            raise ValueError(f"full_every must be a positive int, got {full_every!r}")
        self.path = Path(path).absolute()
        self.codec = codec if codec is not None else nzcodec.Lossless()
        self.previous = Path(previous).absolute() if previous is not None else None
        if self.previous is not None and self.previous.resolve() == self.path.resolve():
            raise ValueError(f"cannot save {self.path} as a delta against itself: replacing it would delete the base")
        self.full_every = full_every
        self.overwrite = overwrite
        self.sync_files = sync_files
        self.save_id = uuid.uuid4().hex
        self.is_coordinator = False
        self._tmp: Path | None = None
        self._base: tuple[Path, Manifest] | None = None

    # -- DCP protocol ------------------------------------------------------------------------------------------
    def reset(self, checkpoint_id: str | os.PathLike | None = None) -> None:
        if checkpoint_id:
            self.path = Path(checkpoint_id).absolute()
        self.save_id = uuid.uuid4().hex

    def set_up_storage_writer(self, is_coordinator: bool, *args: Any, **kwargs: Any) -> None:
        if kwargs.get("use_collectives") is False:
            raise ValueError("nzdist checkpoints need use_collectives=True (one coordinator publishes the save)")
        self.is_coordinator = is_coordinator

    def prepare_local_plan(self, plan: SavePlan) -> SavePlan:
        return plan

    def prepare_global_plan(self, plans: list[SavePlan]) -> list[SavePlan]:
        if self.path.exists():
            if not self.overwrite:
                raise FileExistsError(f"{self.path} exists and overwrite=False")
            if (self.path / METADATA_NAME).is_file():
                live = live_dependents(self.path)
                if live:
                    raise CheckpointInUseError(
                        f"refusing to replace {self.path}: delta checkpoint(s) {', '.join(live)} need it as their base"
                    )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic.remove_stale_temps(self.path)
        self._tmp = atomic.temp_dir_for(self.path, self.save_id[:12])
        self._tmp.mkdir()
        self._base = None
        if self.previous is not None:
            _, man = read_metadata(self.previous)
            if man.chain_depth + 1 < self.full_every:
                self._base = (self.previous, man)
        base_path = str(self._base[0]) if self._base else None
        return [
            dataclasses.replace(p, storage_data=_RankPlan(f"__{i}_", str(self._tmp), base_path))
            for i, p in enumerate(plans)
        ]

    def write_data(self, plan: SavePlan, planner: SavePlanner) -> Future[list[WriteResult]]:
        rp: _RankPlan = plan.storage_data
        name = f"{rp.prefix}0{DATA_SUFFIX}"
        base = Checkpoint(rp.base_path) if rp.base_path else None
        results: list[WriteResult] = []
        offset = file_crc = 0
        try:
            with open(Path(rp.tmp_dir) / name, "wb") as f:
                for item in plan.items:
                    data = planner.resolve_data(item)
                    if item.type == WriteItemType.BYTE_IO:
                        enc, kind = "raw", "other"
                        payload = (
                            torch.frombuffer(bytearray(data.getbuffer()), dtype=torch.uint8)
                            if data.getbuffer().nbytes
                            else torch.empty(0, dtype=torch.uint8)
                        )
                        dense = payload.numel()
                    else:
                        t = data.detach().cpu()
                        enc, payload, kind = records.encode(
                            t, item.index.fqn, self.codec, _base_item(base, item.index, t)
                        )
                        dense = t.numel() * t.element_size()
                    buf = payload.numpy()
                    crc = zlib.crc32(buf)
                    f.write(buf)
                    file_crc = zlib.crc32(buf, file_crc)
                    results.append(
                        WriteResult(
                            index=item.index,
                            size_in_bytes=len(buf),
                            storage_data=Record(name, offset, len(buf), crc, enc, dense, kind),
                        )
                    )
                    offset += len(buf)
                f.flush()
                if self.sync_files:
                    os.fsync(f.fileno())
        finally:
            if base is not None:
                base.close()
        results.append(
            WriteResult(index=MetadataIndex(_FILE_KEY + name), size_in_bytes=offset, storage_data=(offset, file_crc))
        )
        fut: Future[list[WriteResult]] = Future()
        fut.set_result(results)
        return fut

    def finish(self, metadata: Metadata, results: list[list[WriteResult]]) -> None:
        storage: dict[MetadataIndex, Record] = {}
        files: dict[str, tuple[int, int]] = {}
        for wr in (w for rank in results for w in rank):
            if wr.index.fqn.startswith(_FILE_KEY):
                files[wr.index.fqn[len(_FILE_KEY) :]] = wr.storage_data
            else:
                storage[wr.index] = wr.storage_data
        metadata.storage_data = storage
        metadata.storage_meta = self.storage_meta()
        if self._base is not None and not any(r.encoding in records.BASED for r in storage.values()):
            self._base = None  # nothing matched the base (e.g. other sharding): a full checkpoint, no dependency
        base_ref, depth = None, 0
        if self._base is not None:
            bpath, bman = self._base
            base_ref = BaseRef(os.path.relpath(bpath, self.path), str(bpath), bman.checkpoint_id)
            depth = bman.chain_depth + 1
        manifest = Manifest(
            checkpoint_id=self.save_id, codec=repr(self.codec), base=base_ref, chain_depth=depth, files=files
        )
        atomic.write_file(self._tmp / METADATA_NAME, pack_metadata({"dcp": metadata, "manifest": manifest}))
        if self._base is not None:
            _register_dependent(self._base[0], self.path, self.save_id)
        atomic.publish(self._tmp, self.path, self.overwrite)

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: str | os.PathLike) -> bool:
        return isinstance(checkpoint_id, (str, os.PathLike)) and "://" not in str(checkpoint_id)

    def storage_meta(self):
        from torch.distributed.checkpoint.metadata import StorageMeta

        return StorageMeta(checkpoint_id=str(self.path), save_id=self.save_id)


def _base_item(base: Checkpoint | None, index: MetadataIndex, t: torch.Tensor) -> torch.Tensor | None:
    """The same chunk from the base checkpoint, or None where the base has no such chunk (new key, other
    sharding, other dtype): that item is then stored in full."""
    if base is None or base.record(index) is None:
        return None
    if base.chunk_info(index) != (t.dtype, t.shape):
        return None
    return base.read_tensor(index)


def _register_dependent(base: Path, dependent: Path, dependent_id: str) -> None:
    d = base / DEPENDENTS_DIR
    d.mkdir(exist_ok=True)
    tmp = d / f".{dependent_id}.tmp"
    atomic.write_file(tmp, json.dumps({"path": str(dependent), "checkpoint_id": dependent_id}).encode())
    os.rename(tmp, d / f"{dependent_id}.json")
    atomic.fsync_path(d)


class NzdistStorageReader(StorageReader):
    """``dcp.load(sd, storage_reader=NzdistStorageReader(path))``; reshards like DCP's FileSystemReader."""

    def __init__(self, path: str | os.PathLike, progress=None):
        super().__init__()
        self.path = Path(path).absolute()
        self.progress = progress  # called with each record's stored bytes once it is read (CLI progress bars)
        self._ckpt: Checkpoint | None = None

    def reset(self, checkpoint_id: str | os.PathLike | None = None) -> None:
        if checkpoint_id:
            self.path = Path(checkpoint_id).absolute()
        self.close()

    def close(self) -> None:
        if self._ckpt is not None:
            self._ckpt.close()
            self._ckpt = None

    # No **kwargs on purpose: DCP then does not retry with a per-rank metadata file we never write.
    def read_metadata(self, *args) -> Metadata:
        self.close()
        self._ckpt = Checkpoint(self.path)
        return self._ckpt.metadata

    def set_up_storage_reader(self, metadata: Metadata, is_coordinator: bool, *args: Any) -> None:
        pass

    def prepare_local_plan(self, plan: LoadPlan) -> LoadPlan:
        return plan

    def prepare_global_plan(self, plans: list[LoadPlan]) -> list[LoadPlan]:
        return plans

    def read_data(self, plan: LoadPlan, planner: LoadPlanner) -> Future[None]:
        ckpt = self._ckpt or Checkpoint(self.path)
        by_item = defaultdict(list)
        for req in plan.items:
            by_item[req.storage_index].append(req)
        try:
            for sidx, reqs in by_item.items():
                if self.progress is not None:
                    rec = ckpt.record(sidx)
                    self.progress(rec.length if rec is not None else 0)
                if reqs[0].type == LoadItemType.BYTE_IO:
                    blob = ckpt.read_bytes(sidx)
                    for req in reqs:
                        planner.load_bytes(req, io.BytesIO(blob))
                    continue
                info = ckpt.chunk_info(sidx)
                if info is None:
                    raise KeyError(f"{self.path}: checkpoint metadata has no chunk {sidx}")
                dtype, shape = info
                if len(reqs) == 1 and tuple(reqs[0].lengths) == tuple(shape):
                    target = planner.resolve_tensor(reqs[0]).detach()
                    if (
                        target.shape == shape
                        and target.dtype == dtype
                        and target.is_contiguous()
                        and target.device.type == "cpu"
                    ):
                        ckpt.read_tensor(sidx, out=target)  # decode straight into the destination
                        planner.commit_tensor(reqs[0], target)
                        continue
                whole = ckpt.read_tensor(sidx)
                for req in reqs:
                    src = narrow_tensor_by_index(whole, req.storage_offsets, req.lengths)
                    target = planner.resolve_tensor(req).detach()
                    if target.size() != src.size():
                        raise ValueError(f"{sidx.fqn}: read of {tuple(src.size())} into {tuple(target.size())}")
                    target.copy_(src)
                    planner.commit_tensor(req, target)
        finally:
            if ckpt is not self._ckpt:
                ckpt.close()
        fut: Future[None] = Future()
        fut.set_result(None)
        return fut

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: str | os.PathLike) -> bool:
        try:
            with open(Path(checkpoint_id) / METADATA_NAME, "rb") as f:
                return f.read(len(MAGIC)) == MAGIC
        except OSError:
            return False
