"""save / load / delete: nzdist checkpoints on top of torch.distributed.checkpoint."""

from __future__ import annotations

import os
import shutil
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException

import nzdist.codec as nzcodec

from .files import CheckpointInUseError, live_dependents, read_metadata
from .format import DEPENDENTS_DIR, Manifest
from .storage import NzdistStorageReader, NzdistStorageWriter


@dataclass(frozen=True)
class SaveResult:
    path: str
    kind: str  # "full" or "delta"
    stored_bytes: int  # all record bytes written (metadata excluded)
    dense_bytes: int  # what the same items occupy in memory


@contextmanager
def _dcp_call():
    # DCP warns on every call outside torch.distributed; plain use is a supported mode here, not an accident.
    # DCP also wraps every rank's error in CheckpointException, a BaseException that `except Exception` misses:
    # re-raise the lowest rank's own error (ChecksumError naming a file, FileExistsError, ...) instead.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.distributed is (disabled|unavailable).*")
        try:
            yield
        except CheckpointException as e:
            failures = sorted(e.failures.items())
            if failures and isinstance(failures[0][1][0], Exception):
                raise failures[0][1][0] from e
            raise


def save(
    state_dict: dict,
    path: str | os.PathLike,
    codec=None,
    previous: str | os.PathLike | None = None,
    *,
    full_every: int = 8,
    overwrite: bool = True,
    process_group=None,
) -> SaveResult:
    """Save ``state_dict`` (plain tensors, FSDP2 DTensors, optimizer state, any picklable values) to the
    directory ``path``; every rank of the group calls it with its own shards.

    ``codec``: ``nzdist.Lossless()`` (default), ``nzdist.Lossy(...)`` or ``nzdist.checkpoint.Quantized(...)``.
    ``previous``: an earlier checkpoint; items are stored as deltas against it, and every ``full_every``-th
    save of a chain is full. The checkpoint appears at ``path`` complete or not at all.

    >>> nzdist.checkpoint.save({"model": model.state_dict(), "optim": opt.state_dict()}, "ckpt/step100")
    """
    writer = NzdistStorageWriter(
        path, codec=codec or nzcodec.Lossless(), previous=previous, full_every=full_every, overwrite=overwrite
    )
    with _dcp_call():
        md = dcp.save(state_dict, storage_writer=writer, process_group=process_group)
    recs = md.storage_data.values()
    kind = "delta" if any(r.encoding in ("dx", "qd", "same") for r in recs) else "full"
    return SaveResult(str(writer.path), kind, sum(r.length for r in recs), sum(r.dense_nbytes for r in recs))


def load(state_dict: dict, path: str | os.PathLike, *, process_group=None) -> dict:
    """Load ``path`` into ``state_dict`` in place (its tensors/DTensors give the target sharding, which may
    differ from the saving run's); follows delta chains; returns ``state_dict``.

    >>> sd = {"model": model.state_dict(), "optim": opt.state_dict()}
    >>> nzdist.checkpoint.load(sd, "ckpt/step100"); model.load_state_dict(sd["model"])
    """
    read_metadata(path)  # a missing or corrupt checkpoint fails here with a clear error, on every rank alike
    reader = NzdistStorageReader(path)
    try:
        with _dcp_call():
            dcp.load(state_dict, storage_reader=reader, process_group=process_group)
    finally:
        reader.close()  # the open data files of the checkpoint and of its delta chain
    return state_dict


def manifest(path: str | os.PathLike) -> Manifest:
    """The checkpoint's manifest (id, codec, base, chain depth, data files)."""
    return read_metadata(path)[1]


def dependents(path: str | os.PathLike) -> list[str]:
    """Live delta checkpoints that were written against ``path``."""
    return live_dependents(path)


def delete(path: str | os.PathLike) -> None:
    """Delete a checkpoint; refused with CheckpointInUseError while a delta checkpoint depends on it.

    Only rank 0 should call it in a distributed job.
    """
    path = Path(path).absolute()
    _, man = read_metadata(path)
    live = dependents(path)
    if live:
        raise CheckpointInUseError(
            f"refusing to delete {path}: delta checkpoint(s) {', '.join(live)} need it "
            "as their base; delete those first"
        )
    if man.base is not None:  # drop our entry from the base's list of dependents
        for cand in (path / man.base.relative_path, Path(man.base.absolute_path)):
            entry = cand.resolve() / DEPENDENTS_DIR / f"{man.checkpoint_id}.json"
            if entry.exists():
                entry.unlink()
                break
    shutil.rmtree(path)
