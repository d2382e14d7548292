"""Mixed precision without a second payload: an fp32 shard held as its bf16 rounding plus 16 bits that restore it.

Under ``MixedPrecisionPolicy(param_dtype=bf16)`` every all-gather sends the bf16 cast of the fp32 shard. Keeping
the fp32 payload *and* the cast's payload costs two encodes per step and ~37 bits per weight resident. Instead
the shard is held as

    hi  = x.to(bf16)            torch's own cast (round to nearest even): exactly what plain FSDP2 gathers;
                                entropy-coded, it *is* the all-gather payload
    lo  = the low 16 bits of x  raw, 2 bytes per element
    exceptions                  the few elements where the rule below fails, with their true high 16 bits

and restored exactly by ``high16 = hi - (lo > 0x8000)``: round-to-nearest-even carries into the high half only
when the low half is above one half, or exactly one half with an odd high half. The second case (a tie rounded
up, ~1 element in 2^17 of trained weights) and NaNs (the cast canonicalises them) are the exceptions, kept in a
fixed-size table found with ``nonzero_static`` -- so splitting never synchronises; the exception *count* comes
back with the step's one host read (batched.py), and a shard with more exceptions than its table holds is stored
the other way (its own fp32 payload plus the cast's) for that step. TransformerEngine's ``store_param_remainders``
is the idea; this makes it lossless.
"""

from __future__ import annotations

import torch

from nzdist.codec.split16 import join_host, split_host

_ROOM_PER = 2048  # exception slots: one per this many elements (+16): ~16x the tie rate of random low bits


class Remainder:
    """The 16 bits and the exceptions that turn a shard's bf16 rounding back into its fp32 values."""

    __slots__ = ("lo", "index", "upper", "count")

    def __init__(self, lo: torch.Tensor, index: torch.Tensor, upper: torch.Tensor, count: torch.Tensor):
        self.lo = lo  # int16 [numel]: the low halves
        self.index = index  # int64 [room]: exception positions; numel (a dummy slot) where unused
        self.upper = upper  # int16 [room]: their true high halves
        self.count = count  # int64 scalar (device): exceptions found; > room means the table overflowed

    @property
    def room(self) -> int:
        return self.index.numel()

    @property
    def nbytes(self) -> int:
        return self.lo.numel() * 2 + self.index.numel() * 8 + self.upper.numel() * 2

    def to(self, device: torch.device) -> Remainder:
        return Remainder(self.lo.to(device), self.index.to(device), self.upper.to(device), self.count.to(device))


def room_for(numel: int) -> int:
    return numel // _ROOM_PER + 16


def _high_guess(hi16: torch.Tensor, lo16: torch.Tensor) -> torch.Tensor:
    """The high halves the rounding rule restores, as int16 bit patterns: ``hi - (lo > 0x8000)``, where lo above
    0x8000 unsigned is a negative int16 other than -32768. In 16-bit arithmetic: the only wrap-around (hi = 0x8000
    or 0x0000 with a carry) comes from NaNs, which are exceptions whatever the guess."""
    carry = (lo16 < 0) & (lo16 != -32768)
    return hi16 - carry.to(torch.int16)


def _on_host(*tensors: torch.Tensor) -> bool:
    return all(
        t.device.type == "cpu" and t.is_contiguous() and type(t) in (torch.Tensor, torch.nn.Parameter) for t in tensors
    )


def split(x: torch.Tensor) -> tuple[torch.Tensor, Remainder]:
    """(x.to(bf16), the remainder) for a contiguous fp32 tensor; device ops only, nothing read back. Transient
    memory: about 8 bytes per element besides the outputs (none on the host, where one C++ pass does it)."""
    flat = x.reshape(-1)
    hi = flat.to(torch.bfloat16)  # torch's own cast on every device: what plain FSDP2 gathers, NaNs included
    if _on_host(flat):
        lo, index, upper, count = split_host(flat, hi, room_for(flat.numel()))
        return hi.view(x.shape), Remainder(lo, index, upper, count)
    return _split_elementwise(flat, hi, x.shape)


def _split_elementwise(flat: torch.Tensor, hi: torch.Tensor, shape) -> tuple[torch.Tensor, Remainder]:
    halves = flat.view(torch.int16).view(-1, 2)  # little-endian: [:, 0] low half, [:, 1] high half
    lo = halves[:, 0].clone()
    wrong = _high_guess(hi.view(torch.int16), lo) != halves[:, 1]
    room = room_for(flat.numel())
    index = torch.nonzero_static(wrong, size=room, fill_value=flat.numel()).view(-1)
    upper = torch.cat([halves[:, 1], halves.new_zeros(1)])[index]  # the dummy slot for unused entries
    return hi.view(shape), Remainder(lo, index, upper, wrong.sum())


def join(hi: torch.Tensor, rest: Remainder, out: torch.Tensor) -> torch.Tensor:
    """Write the fp32 values of (``hi``, ``rest``) into ``out`` (contiguous fp32 of hi's shape); returns out."""
    if _on_host(hi, out, rest.lo, rest.index, rest.upper):
        join_host(hi.reshape(-1), rest.lo, rest.index, rest.upper, out.view(-1))
        return out
    return _join_elementwise(hi, rest, out)


def _join_elementwise(hi: torch.Tensor, rest: Remainder, out: torch.Tensor) -> torch.Tensor:
    n = hi.numel()
    upper = torch.empty(n + 1, dtype=torch.int16, device=hi.device)  # slot n: where unused entries point
    upper[:n] = _high_guess(hi.reshape(-1).view(torch.int16), rest.lo)
    upper[rest.index] = rest.upper
    halves = out.view(-1).view(torch.int16).view(-1, 2)
    halves[:, 0] = rest.lo
    halves[:, 1] = upper[:n]
    return out
