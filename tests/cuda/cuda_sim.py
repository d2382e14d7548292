"""ctypes wrapper around csrc/cuda/host_sim.cpp: the GPU codec's shared per-chunk code (chunk.h) built for the
host with the system C++ compiler, so tests on machines without a GPU run the kernels' per-lane logic."""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

from nzdist.codec.cuda import pack_decode_jobs
from nzdist.codec.dtypes import MANTISSA_BITS as FULL_MANTISSA
from nzdist.codec.dtypes import MAX_FIELDS, dtype_code

ROOT = Path(__file__).resolve().parents[2]
CUDA_SRC = ROOT / "csrc" / "cuda"


def asan_runtime() -> str | None:
    """Path of the compiler's AddressSanitizer runtime (to LD_PRELOAD into a child Python), or None."""
    cxx = os.environ.get("CXX") or shutil.which("g++")
    if cxx is None:
        return None
    try:
        path = subprocess.run(
            [cxx, "-print-file-name=libasan.so"], capture_output=True, text=True, timeout=30
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return path if path and os.path.isabs(path) and os.path.exists(path) else None


def build_asan() -> ctypes.CDLL:
    """The same library with AddressSanitizer: out-of-bounds accesses abort the process."""
    return build(extra=("-fsanitize=address", "-fno-omit-frame-pointer"), tag="asan")


def build(extra: tuple[str, ...] = (), tag: str = "") -> ctypes.CDLL:
    """Compile host_sim.cpp once per source hash (cached in the temp dir) and load it."""
    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        raise RuntimeError("no C++ compiler found to build csrc/cuda/host_sim.cpp")
    sources = [
        CUDA_SRC / "host_sim.cpp",
        CUDA_SRC / "chunk.h",
        CUDA_SRC / "simt.h",
        CUDA_SRC / "records.h",
        ROOT / "csrc" / "format.h",
        ROOT / "csrc" / "validate.h",
    ]
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sources) + " ".join(extra).encode()).hexdigest()[:16]
    lib = Path(tempfile.gettempdir()) / f"nzdist_host_sim_{tag}{digest}.so"
    if not lib.exists():
        tmp = lib.with_suffix(f".{os.getpid()}.tmp")
        # -ffp-contract=off: the CPU codec is built in ISO C++ mode, which does not fuse multiply-adds either.
        subprocess.run(
            [
                cxx,
                "-std=c++17",
                "-O2",
                "-ffp-contract=off",
                "-fPIC",
                "-shared",
                *extra,
                "-o",
                str(tmp),
                str(CUDA_SRC / "host_sim.cpp"),
            ],
            check=True,
            timeout=300,
        )
        os.replace(tmp, lib)
    so = ctypes.CDLL(str(lib))
    so.nzsim_decode_batch.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int]
    so.nzsim_decode_batch.restype = None
    so.nzsim_crc32c_pieces.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint64]
    so.nzsim_crc32c_pieces.restype = ctypes.c_uint32
    so.nzsim_encode.argtypes = [
        ctypes.c_void_p,
        ctypes.c_uint64,
        ctypes.POINTER(ctypes.c_int64),
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_uint32,
        ctypes.c_uint32,
        ctypes.c_void_p,
        ctypes.c_uint64,
        ctypes.POINTER(ctypes.c_uint32),
    ]
    so.nzsim_encode.restype = ctypes.c_uint64
    return so


# Decode variants (chunk.h's Variant; nzdist.codec.cuda.variants() lists the same names).
VARIANTS = {"v1": 1, "v2": 2, "v3": 3}


class Sim:
    def __init__(self, so: ctypes.CDLL, variant: str = "v1"):
        self.so = so
        self.variant = variant

    def encode(self, t: torch.Tensor, keep: int | None = None, block: int = 0, chunk: int = 1 << 16):
        """Returns (payload uint8 tensor or None, error bits)."""
        t = t.contiguous()
        keep = FULL_MANTISSA[t.dtype] if keep is None else keep
        shape = (ctypes.c_int64 * max(1, t.dim()))(*t.shape)
        err = ctypes.c_uint32(0)
        args = (t.data_ptr(), t.numel(), shape, t.dim(), dtype_code(t.dtype), keep, block, chunk)
        total = self.so.nzsim_encode(*args, None, 0, ctypes.byref(err))
        if err.value:
            return None, err.value
        out = torch.empty(total, dtype=torch.uint8)
        self.so.nzsim_encode(*args, out.data_ptr(), total, ctypes.byref(err))
        return out, err.value

    def decode_batch(self, payloads, outs, grains=None, verify=False, src_lens=None, variant=None):
        """Decode payloads (uint8 tensors) into outs with one decode variant's per-chunk code (VARIANTS; default
        the Sim's); returns the per-payload error words."""
        variant = self.variant if variant is None else variant
        n = len(payloads)
        errs = torch.zeros(n, dtype=torch.int32)
        rows, first = [], 0
        for i, (p, o) in enumerate(zip(payloads, outs)):
            grain = grains[i] if grains else 1 << 16
            items = 1 if o.numel() == 0 else -(-o.numel() // grain)
            length = p.numel() if src_lens is None else src_lens[i]
            rows.append(
                {
                    "src": p.data_ptr(),
                    "src_len": length,
                    "dst": o.data_ptr(),
                    "numel": o.numel(),
                    "first_item": first,
                    "grain": grain,
                    "dtype": dtype_code(o.dtype),
                    "err": errs.data_ptr() + 4 * i,
                }
            )
            first += items
        jobs = pack_decode_jobs(rows)
        max_fields = max((MAX_FIELDS[o.dtype] for o in outs), default=2)
        self.so.nzsim_decode_batch(jobs.data_ptr(), n, max_fields, int(verify), VARIANTS[variant])
        return errs

    def run_table(self, table: torch.Tensor, n_jobs: int, max_fields: int, verify=False, variant=None) -> None:
        """Run a job table built elsewhere (nzdist.codec.jobs.build_jobs, host addresses) through the kernels'
        per-item code."""
        variant = self.variant if variant is None else variant
        self.so.nzsim_decode_batch(table.data_ptr(), n_jobs, max_fields, int(verify), VARIANTS[variant])

    def crc32c_pieces(self, buf: torch.Tensor, piece: int) -> int:
        return self.so.nzsim_crc32c_pieces(buf.data_ptr(), buf.numel(), piece)
