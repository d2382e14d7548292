"""Crash-safe publication: write under a temporary name, fsync, then make it visible with one rename.

A save killed at any point leaves either the old checkpoint or the new one at ``path``, never a mix: data files
and the metadata are written into a temporary sibling directory, synced, and the directory is renamed into
place. Replacing an existing checkpoint uses Linux ``renameat2(RENAME_EXCHANGE)`` — the old and new
directories swap in one step — and falls back to two renames elsewhere (a crash between them leaves the old
checkpoint under ``.NAME.nzdist-old-*``, which :func:`recover_hint` points to).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import uuid
from pathlib import Path

_TMP_TAG = ".nzdist-tmp-"
_OLD_TAG = ".nzdist-old-"
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def temp_dir_for(path: Path, token: str | None = None) -> Path:
    """A sibling of ``path`` on the same filesystem (so the final rename is atomic), hidden by a leading dot."""
    return path.parent / f".{path.name}{_TMP_TAG}{token or uuid.uuid4().hex[:12]}"


def remove_stale_temps(path: Path) -> None:
    """Delete what killed saves to ``path`` left behind (only names this module creates)."""
    if not path.parent.is_dir():
        return
    for p in path.parent.glob(f".{path.name}{_TMP_TAG}*"):
        shutil.rmtree(p, ignore_errors=True)


def fsync_path(path: Path) -> None:
    """fsync a file or a directory (a directory's fsync makes the names in it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file(path: Path, data: bytes | memoryview) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _libc_renameat2():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_renameat2 = _libc_renameat2()


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two existing paths; False where the OS or filesystem cannot."""
    if _renameat2 is None:
        return False
    rc = _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return rc == 0


def publish(tmp: Path, path: Path, overwrite: bool) -> None:
    """Make the complete directory ``tmp`` visible as ``path``; the previous ``path`` (if any) is removed only
    after the new one is in place."""
    fsync_path(tmp)
    if path.exists():
        if not overwrite:
            raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
        if _exchange(tmp, path):
            fsync_path(path.parent)
            shutil.rmtree(tmp)  # now holds the old checkpoint
            return
        old = path.parent / f".{path.name}{_OLD_TAG}{uuid.uuid4().hex[:12]}"
        os.rename(path, old)
        os.rename(tmp, path)
        fsync_path(path.parent)
        shutil.rmtree(old)
        return
    os.rename(tmp, path)
    fsync_path(path.parent)


def recover_hint(path: Path) -> str:
    """What to tell a user whose ``path`` is missing: a replaced checkpoint that a crash left aside, if any."""
    olds = sorted(path.parent.glob(f".{path.name}{_OLD_TAG}*")) if path.parent.is_dir() else []
    if olds:
        return f" (a save that replaced it was interrupted; the previous checkpoint is at {olds[-1]})"
    return ""
