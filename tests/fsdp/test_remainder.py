"""remainder.py: an fp32 shard as its bf16 rounding (torch's own cast) plus 16 bits, restored bit for bit."""

from __future__ import annotations

import pytest
import torch

from nzdist.fsdp.param import CompressedShard
from nzdist.fsdp.remainder import join, room_for, split
from nzdist.fsdp.state import GatherPlan, ShardMeta

from conftest import int_view


def _patterns() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1 << 20, generator=g) * 0.02  # room for 528 exceptions
    b = x.view(torch.int32)
    b[:4096] = torch.arange(4096, dtype=torch.int32) << 20  # high halves across the range, low half 0
    b[4096:8192] |= 0xFFFF  # rounds up
    ties = torch.arange(8192, 8192 + 64)
    b[ties] = (b[ties] & ~0xFFFF) | 0x8000  # ties, odd and even high halves
    for i, v in enumerate(
        [0x7FC12345, -1, 0x7F7FFFFF, 0x7F800000, -8388608, 0x00008000, 0x7FFF8000, 0x80008001 - 2**32]
    ):
        b[9000 + i] = v  # NaNs, the largest finite (rounds to inf), +-inf, subnormal tie, NaN tie, -0 + ulp
    return x


def test_split_is_torch_cast_and_join_restores_every_bit():
    x = _patterns()
    hi, rest = split(x)
    assert torch.equal(int_view(hi), int_view(x.to(torch.bfloat16)))  # what plain FSDP2 gathers
    assert 0 < int(rest.count) <= rest.room == room_for(x.numel())
    out = join(hi, rest, torch.empty_like(x))
    assert torch.equal(out.view(torch.int32), x.view(torch.int32))


def test_a_shard_with_too_many_exceptions_is_stored_as_two_payloads():
    x = torch.full((4096,), float("nan"))  # every element an exception: more than the table holds
    x.view(torch.int32)[::2] = 0x7FC00001
    shard = CompressedShard.wrap(x.clone(), ShardMeta(), owns_storage=True)
    plan: GatherPlan = shard._state.plan
    plan.dtype = torch.bfloat16  # as the first all-gather under MixedPrecisionPolicy(param_dtype=bf16) fixes it
    shard.seal_()
    st = shard._state
    assert st.rest is None and st.ct is not None and st.gather_ct is not None
    assert torch.equal(shard.dense().view(torch.int32), x.view(torch.int32))


def test_split_shard_round_trip_and_resident_bytes():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(256, 64, generator=g) * 0.02
    shard = CompressedShard.wrap(x.clone(), ShardMeta(), owns_storage=True)
    shard._state.plan.dtype = torch.bfloat16
    shard.seal_()
    st = shard._state
    assert st.rest is not None and st.ct is None  # one payload: the bf16 half, which is what travels
    assert torch.equal(shard.dense().view(torch.int32), x.view(torch.int32))
    assert st.resident_bytes() < 0.9 * x.numel() * 4  # ~10.6 + 16 bits of 32
    shard.open_()
    shard.mul_(0.5)
    shard.seal_()
    assert torch.equal(shard.dense().view(torch.int32), (x * 0.5).view(torch.int32)) and st.encodes == 2


def test_host_pass_matches_the_elementwise_reference():
    """Host shards split and join in one C++ pass; device shards keep torch's elementwise ops. Same results."""
    from nzdist.fsdp.remainder import _join_elementwise, _split_elementwise

    x = _patterns()
    hi, rest = split(x)
    ref_hi, ref = _split_elementwise(x.reshape(-1), x.reshape(-1).to(torch.bfloat16), x.shape)
    assert torch.equal(int_view(hi), int_view(ref_hi))
    for a, b in ((rest.lo, ref.lo), (rest.index, ref.index), (rest.upper, ref.upper), (rest.count, ref.count)):
        assert torch.equal(a, b)
    mixed = hi.clone().view(torch.int16)
    mixed[::3] = torch.randint(-(2**15), 2**15, mixed[::3].shape, dtype=torch.int16)  # any hi, not only casts
    hi2 = mixed.view(torch.bfloat16)
    out, ref_out = join(hi2, rest, torch.empty_like(x)), _join_elementwise(hi2, rest, torch.empty_like(x))
    assert torch.equal(out.view(torch.int32), ref_out.view(torch.int32))


def test_host_split_counts_past_a_full_table_and_join_rejects_bad_indices():
    x = torch.full((5000,), 0x3F818000, dtype=torch.int32).view(torch.float32)  # ties rounded up: all exceptions
    hi, rest = split(x)
    assert int(rest.count) == 5000 > rest.room and bool((rest.index < 5000).all())  # first `room`, in order
    assert torch.equal(rest.index, torch.arange(rest.room))
    rest.index[0] = 5001
    with pytest.raises(ValueError, match="exception index 5001"):
        join(hi, rest, torch.empty_like(x))
