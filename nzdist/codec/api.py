"""compress / decompress: the codec's public entry points (CPU codec in nzdist._C)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .. import _C
from . import cuda as _gpu
from . import hostmem
from .config import Codec, Lossless, Lossy, default_chunk_elems
from .dtypes import dtype_code
from .stats import count, read_back
from .tensor import CompressedTensor


def _codec_args(dtype: torch.dtype, codec: Codec) -> tuple[int, int, int]:
    if not isinstance(codec, (Lossless, Lossy)):
        raise TypeError(f"codec must be nzdist.Lossless() or nzdist.Lossy(...), got {codec!r}")
    keep = codec.mantissa_bits_for(dtype)
    block = codec.block_size if isinstance(codec, Lossy) else 0
    return keep, block, codec.chunk_elems_for(dtype)


def _is_plain(t: torch.Tensor) -> bool:
    # The codec hands raw addresses to C++/CUDA. A tensor subclass's data_ptr() need not be where its values are
    # (a wrapper subclass has none, or reports an identity), so subclasses are read and written through dispatch.
    return type(t) in (torch.Tensor, torch.nn.Parameter)


def _plain(t: torch.Tensor) -> torch.Tensor:
    if _is_plain(t):
        return t
    out = torch.empty(t.shape, dtype=t.dtype, device=t.device)
    out.copy_(t)
    return out


def compress(tensor: torch.Tensor, codec: Codec | None = None, *, threads: int = 0) -> CompressedTensor:
    """Compress a bf16/fp16/fp32 tensor of any shape.

    >>> ct = nzdist.compress(w, codec=nzdist.Lossless())          # bit-exact
    >>> ct = nzdist.compress(w, codec=nzdist.Lossy(mantissa_bits=3, block_size=512))

    ``threads``: CPU threads (0 = all cores, or nzdist.set_num_threads / NZDIST_NUM_THREADS). CUDA tensors are
    encoded on the GPU where the CUDA kernels are built (the payload then lives on the GPU), else on the CPU.
    On the GPU this waits once, for the payload's size (use :class:`EncodeBatch` to encode many with one wait).
    """
    batch = EncodeBatch([tensor], [codec], threads=threads)
    return batch.finish(read_back(batch.status))[0]


class EncodeBatch:
    """Compress many tensors with one host read in total: the encode is staged at construction (queued on the
    GPU), ``status`` holds every payload's size and error bits *on the tensors' device*, and ``finish`` takes
    those values once the caller has read them -- typically together with other small results, in one read.

    >>> batch = EncodeBatch(shards, [codec] * len(shards))
    >>> payloads = batch.finish(nzdist.codec.read_back(batch.status))

    ``codecs``: one per tensor (None = Lossless()). All tensors must be on one device.
    """

    def __init__(self, tensors: Sequence[torch.Tensor], codecs: Sequence[Codec | None], *, threads: int = 0):
        if len(codecs) != len(tensors):
            raise ValueError(f"{len(tensors)} tensors but {len(codecs)} codecs")
        self.threads = threads
        self.items = []  # per tensor: (shape, dtype, chunk, src, args)
        devices = set()
        for t, codec in zip(tensors, codecs):
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"expected a torch.Tensor, got {type(t).__name__}")
            code = dtype_code(t.dtype)
            keep, block, chunk = _codec_args(t.dtype, Lossless() if codec is None else codec)
            src = _plain(t.detach())
            devices.add(src.device)
            self.items.append((t.shape, t.dtype, chunk, src, (code, keep, block, chunk)))
        if len(devices) > 1:
            raise ValueError(f"EncodeBatch: tensors on several devices ({sorted(map(str, devices))})")
        self.device = devices.pop() if devices else torch.device("cpu")
        self.on_gpu = self.device.type == "cuda" and _gpu.available()
        count(encode=1)
        if self.on_gpu:
            self._stage_gpu()
        else:
            self._stage_cpu()

    def _stage_cpu(self) -> None:
        self.encoded, words = [], []
        for i, (_shape, _dtype, _chunk, src, (code, keep, block, chunk)) in enumerate(self.items):
            host = src if src.device.type == "cpu" else src.cpu()
            host = host.contiguous()
            self.items[i] = (*self.items[i][:3], host, self.items[i][4])  # raw payloads copy from it in finish
            encoded = _C.encode(host.data_ptr(), host.numel(), list(host.shape), code, keep, block, chunk, self.threads)
            self.encoded.append(encoded)
            words.append((encoded.nbytes, 0))
        self.status = torch.tensor(words, dtype=torch.int64).reshape(len(words), 2)

    def _stage_gpu(self) -> None:
        # One EncodePlan per distinct (kept bits, block, chunk): the plan's kernels take one setting.
        groups: dict[tuple, list[int]] = {}
        for i, (*_, args) in enumerate(self.items):
            groups.setdefault(args[1:], []).append(i)
        self.plans, rows = [], [None] * len(self.items)
        for (keep, block, chunk), idx in groups.items():
            plan = _gpu.EncodePlan([self.items[i][3] for i in idx], keep, block, chunk)
            plan.stage()
            self.plans.append((plan, idx))
            for j, i in enumerate(idx):
                rows[i] = plan.status_words(j)
        self.status = torch.stack(rows) if rows else torch.zeros(0, 2, dtype=torch.int64)

    def finish(self, status: Sequence) -> list[CompressedTensor]:
        """The payloads, written into exact-size buffers. ``status``: ``self.status`` read back (nested lists)."""
        if len(status) != len(self.items):
            raise ValueError(f"status for {len(status)} payloads, the batch has {len(self.items)}")
        for _total, err in status:
            _raise_encode_error(int(err))
        if self.device.type == "cpu":
            datas = [hostmem.empty(int(total), torch.uint8) for total, _ in status]
        else:
            datas = [torch.empty(int(total), dtype=torch.uint8, device=self.device) for total, _ in status]
        if self.on_gpu:
            for plan, idx in self.plans:
                plan.totals = [int(status[i][0]) for i in idx]
                plan.write([datas[i] for i in idx])
        else:
            for encoded, data in zip(self.encoded, datas):
                encoded.write(data.data_ptr(), self.threads)
        return [CompressedTensor(d, shape, dtype, chunk) for d, (shape, dtype, chunk, *_) in zip(datas, self.items)]


def _raise_encode_error(err: int) -> None:
    if err & _C.ERROR_BITS["nan_lossy"]:
        raise ValueError("nzdist: NaN cannot be stored with Lossy(mantissa_bits=0); use mantissa_bits >= 1")
    if err:
        raise RuntimeError(f"nzdist CUDA encode failed (error bits {err:#x})")


def _check_out(ct: CompressedTensor, out: torch.Tensor) -> None:
    if out.shape != ct.shape or out.dtype != ct.dtype:
        raise ValueError(f"out is {tuple(out.shape)} {out.dtype}; the payload holds {tuple(ct.shape)} {ct.dtype}")


def decompress(
    ct: CompressedTensor, out: torch.Tensor | None = None, *, threads: int = 0, check: bool = True, verify: bool = False
) -> torch.Tensor:
    """Decode ``ct`` into a new tensor (on the payload's device), or into ``out`` (same shape and dtype, any
    device or layout).

    Raises ``nzdist.FormatError`` for a corrupt payload. On the CPU this is checked before anything is written;
    on the GPU, decoding is asynchronous and never reads or writes out of bounds, and ``check=False`` skips the
    host synchronisation that reads the error flags back. ``verify``: check every CRC32C on the GPU too (the CPU
    always does; checkpoint loads ask for it).
    """
    return decompress_batch([ct], None if out is None else [out], threads=threads, check=check, verify=verify)[0]


def decompress_batch(
    cts: Sequence[CompressedTensor],
    outs: Sequence[torch.Tensor] | None = None,
    *,
    threads: int = 0,
    check: bool = True,
    verify: bool = False,
) -> list[torch.Tensor]:
    """Decode many payloads in one pass over all their chunks (e.g. every rank's shard after an all-gather):
    one multithreaded CPU call, or one CUDA launch when payloads and outputs are on the GPU. Returns the outputs
    (``outs`` when given)."""
    if outs is not None and len(outs) != len(cts):
        raise ValueError(f"{len(cts)} payloads but {len(outs)} outputs")
    count(decode=1)
    on_gpu = all(isinstance(c, CompressedTensor) and c.data.device.type == "cuda" for c in cts) and (
        outs is None or all(o.device.type == "cuda" for o in outs)
    )
    if cts and on_gpu and _gpu.available():
        outs = [torch.empty(c.shape, dtype=c.dtype, device=c.data.device) for c in cts] if outs is None else list(outs)
        for c, o in zip(cts, outs):
            _check_out(c, o)
        targets = [o if _is_plain(o) else torch.empty(o.shape, dtype=o.dtype, device=o.device) for o in outs]
        # One warp per chunk: each payload's own chunk size (small chunks would otherwise be decoded 64 to a warp);
        # a payload rebuilt from bytes without one (raw) is sized by its dtype's default.
        grains = [c.chunk_elems or default_chunk_elems(c.dtype) for c in cts]
        _gpu.decompress_batch([c.data for c in cts], targets, chunk_elems=grains, check=check, verify=verify)
        for o, t in zip(outs, targets):
            if t is not o:
                o.copy_(t)
        return outs
    results, targets, jobs = [], [], []
    for i, ct in enumerate(cts):
        if not isinstance(ct, CompressedTensor):
            raise TypeError(f"expected a CompressedTensor, got {type(ct).__name__}")
        if outs is not None:
            out = outs[i]
        elif ct.data.device.type == "cpu":
            out = hostmem.empty(ct.shape, ct.dtype)
        else:
            out = torch.empty(ct.shape, dtype=ct.dtype, device=ct.data.device)
        _check_out(ct, out)
        direct = out.device.type == "cpu" and out.is_contiguous() and _is_plain(out)
        target = out if direct else hostmem.empty(ct.shape, ct.dtype)
        data = ct.data if ct.data.device.type == "cpu" else ct.data.cpu()
        results.append(out)
        targets.append((target, data))
        jobs.append((data.data_ptr(), data.numel(), target.data_ptr(), target.numel() * target.element_size()))
    _C.decode_batch(jobs, threads)
    count(syncs=1 if check else 0)  # the GPU would read the error words back here
    for out, (target, _) in zip(results, targets):
        if target is not out:
            out.copy_(target)
    return results


def max_compressed_bytes(numel: int, dtype: torch.dtype, codec: Codec | None = None, ndim: int = 1) -> int:
    """The largest payload ``compress`` can return for ``numel`` elements of ``dtype`` in ``ndim`` dims (lossless
    payloads never exceed the raw fallback: header + numel * element size)."""
    code = dtype_code(dtype)
    keep, block, chunk = _codec_args(dtype, Lossless() if codec is None else codec)
    return _C.max_encoded_bytes(int(numel), int(ndim), code, keep, block, chunk)


def set_num_threads(n: int) -> None:
    """CPU codec threads for calls that pass no ``threads`` (0 = all cores)."""
    _C.set_num_threads(int(n))


def get_num_threads() -> int:
    return _C.get_num_threads()
