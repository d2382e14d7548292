"""The GPU codec (csrc/cuda, extension ``nzdist._cuda``): compress and decompress CUDA tensors on the current
torch CUDA stream, producing and reading the same bytes as the CPU codec.

>>> payload = cuda.compress(w)                                  # w: CUDA bf16/fp16/fp32 tensor
>>> errors = cuda.decompress_batch([payload], [out])            # queued on the stream, no host sync
>>> cuda.raise_on_errors(errors)                                # optional, syncs: FormatError if corrupt

Decode is asynchronous: corrupt payloads never cause out-of-bounds reads or writes; they set a per-payload
error word on the device, which ``decompress_batch(check=True)`` (the default) reads back and raises on.
Encode synchronises once (the payload's size decides its allocation).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch

from .. import _C
from .config import DEFAULT_CHUNK_ELEMS
from .dtypes import MANTISSA_BITS, MAX_FIELDS, dtype_code
from .errors import FormatError, describe_error_word
from .stats import read_back

_NAN_LOSSY = _C.ERROR_BITS["nan_lossy"]

try:
    from .. import _cuda as _ext

    _IMPORT_ERROR = ""
except ImportError as e:  # built without CUDA
    _ext = None
    _IMPORT_ERROR = str(e)


def pack_decode_jobs(jobs: Sequence[dict[str, int]]) -> torch.Tensor:
    """The decode kernels' job table (csrc/cuda/records.h: DecodeJob) as a CPU uint8 tensor, one record per dict
    of field name -> value (fields not named are 0), laid out by the extension's own offsets (``_C.DECODE_JOB``).
    Needs no GPU: the host simulation of the kernels (tests/cuda) reads the same table."""
    size = _C.DECODE_JOB_BYTES
    buf = bytearray(size * len(jobs))
    for i, job in enumerate(jobs):
        for name, value in job.items():
            off, width = _C.DECODE_JOB[name]
            buf[i * size + off : i * size + off + width] = int(value).to_bytes(width, "little")
    return torch.frombuffer(buf, dtype=torch.uint8).clone() if buf else torch.zeros(0, dtype=torch.uint8)


def unavailable_reason() -> str | None:
    """Why the CUDA codec cannot run here, or None when it can. A missing or too old driver, or no device, is
    reported in the CUDA runtime's own words, so "no GPU" is never a guess:

    >>> cuda.unavailable_reason()       # a machine without an NVIDIA driver
    'nzdist CUDA runtime: cudaErrorInsufficientDriver (35): CUDA driver version is insufficient for CUDA ...'
    """
    if _ext is None:
        return (
            f"nzdist was built without its CUDA kernels (nzdist._cuda: {_IMPORT_ERROR}); "
            "reinstall with NZDIST_CUDA=1 and the CUDA toolkit on PATH"
        )
    reason = _runtime_reason()
    if reason is None and not torch.cuda.is_available():
        reason = f"torch {torch.__version__} cannot use CUDA (a CPU-only build of torch?)"
    return reason


@functools.cache
def _runtime_reason() -> str | None:
    # Cached: the runtime's answer (and its initialisation error) does not change within a process, and
    # available() runs on every GPU compress/decompress.
    try:
        count = _ext.device_count()
    except RuntimeError as e:
        return str(e)
    return None if count > 0 else "nzdist CUDA runtime: 0 devices"


def available() -> bool:
    """True when the CUDA kernels are built and a GPU is usable (``unavailable_reason()`` says why not)."""
    return unavailable_reason() is None


# Decode kernel variants, all compiled into nzdist._cuda and chosen per call (csrc/cuda/NOTES.md, "Decode
# variants", says what each changes and what it is predicted to gain). The extension's own list wins when built.
DECODE_VARIANTS = ("v1", "v2", "v3")
DEFAULT_VARIANT = "v1"  # until a GPU has measured the others


def variants() -> tuple[str, ...]:
    """Names of the decode kernel variants, in the order the kernels were written (needs no GPU).

    >>> for v in cuda.variants(): cuda.decompress_batch(payloads, outs, variant=v)
    """
    return tuple(_ext.decode_variants()) if _ext is not None else DECODE_VARIANTS


def _variant_index(variant: str | None) -> int:
    import os

    name = variant or os.environ.get("NZDIST_CUDA_DECODE") or DEFAULT_VARIANT
    names = variants()
    if name not in names:
        raise ValueError(f"unknown decode variant {name!r}; built variants: {', '.join(names)}")
    return names.index(name)


def _require() -> None:
    reason = unavailable_reason()
    if reason is not None:
        raise RuntimeError(f"nzdist CUDA codec unavailable: {reason}")


def _stream(device: torch.device) -> int:
    return torch.cuda.current_stream(device).cuda_stream


def _prepare(tensor: torch.Tensor, keep_bits: int | None) -> tuple[torch.Tensor, int, int]:
    if not isinstance(tensor, torch.Tensor) or tensor.device.type != "cuda":
        raise TypeError("nzdist.codec.cuda.compress expects a CUDA tensor")
    code = dtype_code(tensor.dtype)
    full = MANTISSA_BITS[tensor.dtype]
    keep = full if keep_bits is None or keep_bits < 0 else int(keep_bits)
    if keep > full:
        raise ValueError(f"keep_bits={keep} exceeds the {full} mantissa bits of {tensor.dtype}")
    return tensor.detach().contiguous(), code, keep


class EncodePlan:
    """An encode prepared ahead (sources, workspaces); ``stage()`` and ``write()`` only enqueue kernels, so a
    benchmark can time them with CUDA events. compress_batch is ``stage(); sizes(); write(...)``.

    >>> plan = EncodePlan([w], None, 0, 65536); plan.stage(); n = plan.sizes()[0]
    >>> out = torch.empty(n, dtype=torch.uint8, device="cuda"); plan.write([out])
    """

    def __init__(self, tensors: Sequence[torch.Tensor], keep_bits: int | None, block_size: int, chunk_elems: int):
        _require()
        self.block_size, self.chunk_elems = int(block_size), int(chunk_elems)
        self.jobs = []
        for t in tensors:
            src, code, keep = _prepare(t, keep_bits)
            plan = _ext.encode_plan(src.numel(), src.dim(), code, keep, self.block_size, self.chunk_elems)
            ws = torch.empty(plan["workspace_bytes"], dtype=torch.uint8, device=src.device)
            self.jobs.append((src, code, keep, plan, ws))

    def stage(self) -> None:
        """Normalisers, chunk encoding and layout into each workspace (current stream, no sync)."""
        for src, code, keep, _plan, ws in self.jobs:
            with torch.cuda.device(src.device):
                _ext.encode_stage(
                    src.data_ptr(),
                    src.numel(),
                    list(src.shape),
                    code,
                    keep,
                    self.block_size,
                    self.chunk_elems,
                    ws.data_ptr(),
                    _stream(src.device),
                )

    def status_words(self, j: int) -> torch.Tensor:
        """Payload j's (size, error bits) as an int64 pair on the device, not read: a caller can read many
        batches' words, and its own small results, in one host synchronisation (api.EncodeBatch)."""
        _src, _code, _keep, p, ws = self.jobs[j]
        block = ws[p["status_off"] : p["status_off"] + _C.ENCODE_STATUS_BYTES]
        t_off, _ = _C.ENCODE_STATUS["total"]
        e_off, _ = _C.ENCODE_STATUS["err"]
        return torch.cat(
            [block[t_off : t_off + 8].view(torch.int64), block[e_off : e_off + 4].view(torch.int32).long()]
        )

    def sizes(self) -> list[int]:
        """The one synchronisation: every payload's size and error bits (api.h: the status block)."""
        if not self.jobs:
            return []
        words = read_back(torch.stack([self.status_words(j) for j in range(len(self.jobs))]))
        for _total, err in words:
            if err & _NAN_LOSSY:
                raise ValueError("nzdist: NaN cannot be stored with Lossy(mantissa_bits=0); use mantissa_bits >= 1")
            if err:
                raise RuntimeError(f"nzdist CUDA encode failed (error bits {err:#x})")
        self.totals = [int(t) for t, _ in words]
        return self.totals

    def write(self, outs: Sequence[torch.Tensor]) -> None:
        """Header, index, compaction and checksums into ``outs`` (16-aligned uint8, at least sizes() bytes)."""
        for (src, code, keep, _plan, ws), out, total in zip(self.jobs, outs, self.totals):
            if out.numel() < total:
                raise ValueError(f"output buffer of {out.numel()} bytes for a {total}-byte payload")
            with torch.cuda.device(src.device):
                _ext.encode_write(
                    src.data_ptr(),
                    src.numel(),
                    list(src.shape),
                    code,
                    keep,
                    self.block_size,
                    self.chunk_elems,
                    ws.data_ptr(),
                    out.data_ptr(),
                    total,
                    _stream(src.device),
                )


def compress_batch(
    tensors: Sequence[torch.Tensor],
    keep_bits: int | None = None,
    block_size: int = 0,
    chunk_elems: int = DEFAULT_CHUNK_ELEMS,
    outs: Sequence[torch.Tensor | None] | None = None,
) -> list[torch.Tensor]:
    """Encode several CUDA tensors with one host synchronisation in total (FSDP re-encodes every shard after an
    optimizer step). Returns one 1-D uint8 payload per tensor, byte-identical to the CPU codec's.

    ``outs``: optional preallocated uint8 CUDA buffers (e.g. fixed-capacity all-gather inputs); a payload that
    fits is written at the start of its buffer and returned as a view ``out[:nbytes]``, otherwise it gets a
    fresh allocation (compare ``payload.data_ptr()`` with the buffer's to tell).
    """
    _require()
    if outs is not None and len(outs) != len(tensors):
        raise ValueError(f"{len(tensors)} tensors but {len(outs)} output buffers")
    plan = EncodePlan(tensors, keep_bits, block_size, chunk_elems)
    plan.stage()
    results = []
    for i, ((src, *_), total) in enumerate(zip(plan.jobs, plan.sizes())):
        buf = None if outs is None else outs[i]
        if buf is not None and (
            buf.dtype != torch.uint8 or buf.dim() != 1 or not buf.is_contiguous() or buf.device != src.device
        ):
            raise ValueError("output buffers must be contiguous 1-D uint8 tensors on the tensor's device")
        if buf is not None and buf.numel() >= total and buf.data_ptr() % 16 == 0:
            results.append(buf[:total])
        else:
            results.append(torch.empty(total, dtype=torch.uint8, device=src.device))
    plan.write(results)
    return results


def compress(
    tensor: torch.Tensor,
    keep_bits: int | None = None,
    block_size: int = 0,
    chunk_elems: int = DEFAULT_CHUNK_ELEMS,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Encode a CUDA tensor into a 1-D uint8 CUDA payload, byte-identical to the CPU codec's for the same
    parameters. ``keep_bits``: mantissa bits kept (None = all = lossless); ``block_size`` > 0 enables the lossy
    block normaliser; ``out``: optional buffer to write into when the payload fits (see compress_batch).
    Synchronises the current stream once, to size the payload."""
    return compress_batch([tensor], keep_bits, block_size, chunk_elems, None if out is None else [out])[0]


class DecodePlan:
    """A batch decode prepared ahead: the job table on the device, the error words, the kernel chosen; ``launch()``
    enqueues the one kernel (plus copies into non-contiguous outputs) and nothing else, so it can be timed with
    CUDA events, or replayed (the outputs are rewritten, the error words OR-ed again).

    >>> plan = DecodePlan(payloads, outs, variant="v2"); errors = plan.launch(); raise_on_errors(errors)
    """

    def __init__(
        self,
        payloads: Sequence[torch.Tensor],
        outs: Sequence[torch.Tensor],
        *,
        chunk_elems: int | Sequence[int] = DEFAULT_CHUNK_ELEMS,
        verify: bool = False,
        variant: str | None = None,
    ):
        _require()
        if len(payloads) != len(outs):
            raise ValueError(f"{len(payloads)} payloads but {len(outs)} outputs")
        self.kernel = _variant_index(variant)
        self.verify = bool(verify)
        self.n_jobs = len(payloads)
        if not payloads:
            self.errors = torch.zeros(0, dtype=torch.int32)
            return
        device = self.device = outs[0].device
        n = len(payloads)
        grains = [int(chunk_elems)] * n if isinstance(chunk_elems, int) else [int(c) for c in chunk_elems]
        if len(grains) != n:
            raise ValueError("chunk_elems must be an int or one value per payload")
        targets, self.copies, self.keep_alive = [], [], []
        for p, o in zip(payloads, outs):
            if p.dtype != torch.uint8 or p.dim() != 1 or p.device != device or o.device != device:
                raise ValueError("payloads must be 1-D uint8 tensors on the same CUDA device as the outputs")
            dtype_code(o.dtype)
            if p.data_ptr() % 16 or not p.is_contiguous():  # the kernels use aligned loads
                p = p.contiguous().clone()
            self.keep_alive.append(p)
            if o.is_contiguous():
                targets.append(o)
            else:
                t = torch.empty(o.shape, dtype=o.dtype, device=device)
                targets.append(t)
                self.copies.append((o, t))
        self.targets = targets
        with torch.cuda.device(device):
            self.errors = torch.zeros(n, dtype=torch.int32, device=device)
            rows, first = [], 0
            for i, (p, t, g) in enumerate(zip(self.keep_alive, targets, grains)):
                if g <= 0:
                    raise ValueError(f"chunk_elems must be positive, got {g}")
                items = 1 if t.numel() == 0 else -(-t.numel() // g)
                rows.append(
                    {
                        "src": p.data_ptr(),
                        "src_len": p.numel(),
                        "dst": t.data_ptr(),
                        "numel": t.numel(),
                        "first_item": first,
                        "grain": g,
                        "dtype": dtype_code(t.dtype),
                        "err": self.errors.data_ptr() + 4 * i,
                    }
                )
                first += items
            self.total_items = first
            self.jobs = pack_decode_jobs(rows).pin_memory().to(device, non_blocking=True)
            self.max_fields = max(MAX_FIELDS[t.dtype] for t in targets)

    def launch(self) -> torch.Tensor:
        """Enqueue the decode on the current stream; returns the per-payload int32 error words (device)."""
        if not self.n_jobs:
            return self.errors
        with torch.cuda.device(self.device):
            _ext.decode_batch(
                self.jobs.data_ptr(),
                self.n_jobs,
                self.total_items,
                self.max_fields,
                self.verify,
                _stream(self.device),
                self.kernel,
            )
            for o, t in self.copies:
                o.copy_(t)
        return self.errors


def launch_jobs(
    table: torch.Tensor,
    n_jobs: int,
    total_items: int,
    max_fields: int,
    device: torch.device,
    *,
    verify: bool = False,
    variant: str | None = None,
) -> torch.Tensor:
    """Enqueue one decode of ``n_jobs`` DecodeJob records (``table``: CPU uint8, device addresses) on the current
    stream: the table is copied over from pinned memory without waiting, nothing is read back. Returns the
    device copy of the table (the caching allocator keeps it until the stream has passed)."""
    _require()
    dev_table = table.pin_memory().to(device, non_blocking=True)
    with torch.cuda.device(device):
        _ext.decode_batch(
            dev_table.data_ptr(),
            n_jobs,
            total_items,
            max_fields,
            bool(verify),
            _stream(device),
            _variant_index(variant),
        )
    return dev_table


def decompress_batch(
    payloads: Sequence[torch.Tensor],
    outs: Sequence[torch.Tensor],
    *,
    chunk_elems: int | Sequence[int] = DEFAULT_CHUNK_ELEMS,
    verify: bool = False,
    check: bool = True,
    variant: str | None = None,
) -> torch.Tensor:
    """Decode every payload into its ``out`` (CUDA tensor of the payload's shape and dtype) in one kernel launch.

    ``payloads``: 1-D uint8 CUDA tensors (e.g. views of an all-gather output, one per rank); each must hold a
    whole payload at its start (trailing bytes are fine). ``chunk_elems``: the chunk size the payloads were
    encoded with (an int, or one per payload), used only to size the launch: one warp per chunk (a wrong value
    costs speed, never correctness). ``verify``: also check every CRC32C. ``variant``: the decode kernel
    (``variants()``; default ``$NZDIST_CUDA_DECODE`` or ``DEFAULT_VARIANT``), every one bit-exact. Returns the
    per-payload int32 error words (device); with ``check`` it synchronises and raises ``FormatError`` if any is
    nonzero.
    """
    errors = DecodePlan(payloads, outs, chunk_elems=chunk_elems, verify=verify, variant=variant).launch()
    if check:
        raise_on_errors(errors)
    return errors


def decompress(payload: torch.Tensor, out: torch.Tensor, **kwargs) -> torch.Tensor:
    """Decode one payload into ``out``; returns ``out``. Keyword arguments as for decompress_batch."""
    decompress_batch([payload], [out], **kwargs)
    return out


def raise_on_errors(errors: torch.Tensor) -> None:
    """Synchronise and raise FormatError naming each corrupt payload of a decompress_batch call."""
    host = read_back(errors)
    bad = [(i, e) for i, e in enumerate(host) if e]
    if bad:
        desc = "; ".join(f"payload {i}: {describe_error_word(e)}" for i, e in bad)
        raise FormatError(f"nzdist payload (GPU decode): {desc}")
