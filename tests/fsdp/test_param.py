"""CompressedShard in one process: sealing, dispatch semantics, and the all-gather decode path (fed with slots
built by hand, as FSDP's all-gather would deliver them)."""

from __future__ import annotations

import math

import pytest
import torch

import nzdist
from nzdist.codec import decode_into
from nzdist.fsdp import check
from nzdist.fsdp.capacity import capacity_for
from nzdist.fsdp.param import CompressedShard
from nzdist.fsdp.slot import KIND_OVERFLOW, KIND_RAW, SLOT_HEADER_BYTES, CapacityError, write_slot
from nzdist.fsdp.state import ShardMeta

from conftest import int_view


def weights(*shape, seed=0, dtype=torch.bfloat16):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g) * 0.02).to(dtype)


def sealed(t, **meta):
    s = CompressedShard.wrap(t.clone(), ShardMeta(**meta), owns_storage=True)
    s.seal_()
    return s


def test_seal_keeps_bits_and_frees_dense_storage():
    dense = weights(256, 64)
    s = CompressedShard.wrap(dense, ShardMeta(), owns_storage=True)
    s.seal_()
    assert s.is_sealed and dense.untyped_storage().size() == 0  # the owned buffer is released
    assert s.resident_bytes() < 0.75 * 256 * 64 * 2
    assert torch.equal(int_view(s.dense()), int_view(weights(256, 64)))


def test_in_place_op_on_sealed_shard_reencodes_exactly():
    ref = weights(128, 32)
    s = sealed(ref)
    before = s.encode_count
    s.mul_(0.5).add_(1.0)
    assert s.is_sealed and s.encode_count == before + 2
    assert torch.equal(int_view(s.dense()), int_view(ref.mul(0.5).add(1.0)))


def test_alias_views_share_state_and_subviews_copy_open_data():
    s = CompressedShard.wrap(weights(8, 6).clone(), ShardMeta(), owns_storage=True)
    flat = s.view(-1)
    assert isinstance(flat, CompressedShard) and flat._state is s._state and flat.shape == (48,)
    assert s.detach()._state is s._state
    chunks = torch.chunk(s, 3)  # FSDP's sharding: views of the open dense tensor
    assert all(isinstance(c, CompressedShard) for c in chunks)
    chunks[1].zero_()
    assert torch.equal(s.dense()[3:6], torch.zeros(3, 6, dtype=torch.bfloat16))  # chunk sizes 3, 3, 2


def test_factories_and_reads():
    s = sealed(weights(4, 4))
    assert isinstance(s.new_zeros((2, 4)), CompressedShard)  # FSDP's padded shard buffer
    assert type(torch.zeros_like(s)) is torch.Tensor  # optimizer state stays plain
    assert type(s + 1) is torch.Tensor
    assert s.is_sealed  # reads decode into temporaries


def test_unsupported_dtype_raises():
    with pytest.raises(TypeError, match="int64"):
        CompressedShard.wrap(torch.arange(4), ShardMeta())


def test_meta_validates():
    with pytest.raises(ValueError, match="on_overflow"):
        ShardMeta(on_overflow="ignore")
    with pytest.raises(ValueError, match="headroom"):
        ShardMeta(headroom=-1)


class _FakeMesh:
    def __init__(self, world):
        self.world = world

    def size(self):
        return self.world


def _gathered(full, world, gather_dtype=None, trainable=True, corrupt_rank=None, overflow_rank=None):
    """Shard ``full`` on dim 0 like FSDP, build each rank's slot, and concatenate them like the all-gather."""
    gather_dtype = gather_dtype or full.dtype
    rows = full.shape[0]
    padded_rows = -(-rows // world)
    row_numel = math.prod(full.shape[1:])
    padded_numel = padded_rows * row_numel
    even = rows % world == 0
    meta = ShardMeta(trainable=trainable, on_overflow="raise")
    shards = [
        sealed(full[min(r * padded_rows, rows) : min((r + 1) * padded_rows, rows)].contiguous(), trainable=trainable)
        for r in range(world)
    ]
    payload = max((s._state.payload_for(gather_dtype).nbytes if s.numel() else 0) for s in shards)
    capacity = capacity_for(
        payload, padded_numel=padded_numel, dtype=gather_dtype, headroom=0.02, trainable=trainable, ndim=full.dim()
    )
    slices = 1 if even else -(-capacity // padded_numel)
    capacity = capacity if even else slices * padded_numel
    for r, s in enumerate(shards):  # what the first all-gather's agreement fixes on every rank
        s._state.plan.fix(capacity, slices, gather_dtype, group=None, world=world, rank=r, meta=meta)
    slots = [s._state.make_slot(gather_dtype, capacity) for s in shards]
    if corrupt_rank is not None:
        slots[corrupt_rank][SLOT_HEADER_BYTES + 20 : SLOT_HEADER_BYTES + 28] ^= 0x33
    if overflow_rank is not None:
        write_slot(slots[overflow_rank], KIND_OVERFLOW, None, needed=capacity * 2)
    if even:
        outputs = (torch.cat(slots),)
    else:  # each slot travels as `slices` padded-shape pieces; output j holds piece j of every rank
        outputs = tuple(
            torch.cat([sl[j * padded_numel : (j + 1) * padded_numel] for sl in slots]) for j in range(slices)
        )
    metadata = (gather_dtype, tuple(full.shape), world, capacity, even, meta, shards[0]._state.plan)
    return shards[0], outputs, metadata


@pytest.mark.parametrize("shape,world", [((64, 48), 2), ((67, 48), 4), ((5,), 2), ((3, 7), 4)])
def test_post_all_gather_decodes_all_ranks_bit_exactly(shape, world):
    full = weights(*shape, seed=3)
    local, outputs, metadata = _gathered(full, world)
    out, to_free = local.fsdp_post_all_gather(outputs, metadata, full.dtype)
    assert torch.equal(int_view(out), int_view(full)) and to_free[0] is out
    again = torch.empty_like(full)
    assert local.fsdp_post_all_gather(outputs, metadata, full.dtype, out=again) is None  # FSDP's later calls
    assert torch.equal(int_view(again), int_view(full))


def test_post_all_gather_mixed_precision_decodes_the_cast():
    full = weights(32, 16, dtype=torch.float32)
    local, outputs, metadata = _gathered(full, 2, gather_dtype=torch.bfloat16)
    out, _ = local.fsdp_post_all_gather(outputs, metadata, torch.bfloat16)
    assert out.dtype == torch.bfloat16 and torch.equal(int_view(out), int_view(full.bfloat16()))


def test_corrupted_payload_is_raised_at_the_check_naming_the_rank():
    local, outputs, metadata = _gathered(weights(64, 64), 2, corrupt_rank=1)
    local.fsdp_post_all_gather(outputs, metadata, torch.bfloat16)  # queued: nothing is read back here
    with pytest.raises(nzdist.FormatError, match="rank 1: "):
        check()
    check()  # reported once: the words are cleared


def test_unagreed_overflow_mark_is_a_capacity_error_at_the_check():
    local, outputs, metadata = _gathered(weights(64, 64), 2, overflow_rank=1)
    local.fsdp_post_all_gather(outputs, metadata, torch.bfloat16)
    with pytest.raises(CapacityError, match="rank 1: slot marked overflow"):
        check()


def test_the_codec_checks_slot_headers():
    w = weights(16, 8)
    payload = nzdist.compress(w).data
    errors = torch.zeros(4, dtype=torch.int32)
    good = torch.zeros(SLOT_HEADER_BYTES + payload.numel(), dtype=torch.uint8)
    write_slot(good, 0, payload)
    bad_magic = good.clone()
    bad_magic[0] ^= 1
    too_long = good.clone()
    too_long[8] = 255  # claims more bytes than the slot holds
    raw = torch.zeros(SLOT_HEADER_BYTES + w.numel() * 2, dtype=torch.uint8)
    write_slot(raw, KIND_RAW, w.view(-1).view(torch.uint8))
    outs = [torch.empty_like(w) for _ in range(4)]
    decode_into([good, bad_magic, too_long, raw], outs, errors, slots=True)
    bits = nzdist._C.ERROR_BITS
    assert errors.tolist() == [0, bits["slot"], bits["slot"], 0]
    assert torch.equal(int_view(outs[0]), int_view(w)) and torch.equal(int_view(outs[3]), int_view(w))
    wrong_raw = torch.zeros(SLOT_HEADER_BYTES + 10, dtype=torch.uint8)
    write_slot(wrong_raw, KIND_RAW, torch.zeros(10, dtype=torch.uint8))
    errors.zero_()
    decode_into([wrong_raw, good], [torch.empty_like(w), torch.empty(4, 16, dtype=torch.bfloat16)], errors, slots=True)
    assert errors.tolist()[:2] == [
        bits["mismatch"],
        bits["mismatch"],
    ]  # raw of the wrong size; a payload of another element count


def test_capacity_policy():
    bf16 = dict(padded_numel=1000, dtype=torch.bfloat16)
    assert capacity_for(1300, **bf16, headroom=0.02, trainable=True) >= SLOT_HEADER_BYTES + 1300 * 1.02
    assert capacity_for(1300, **bf16, headroom=0.02, trainable=False) == SLOT_HEADER_BYTES + 1312  # exact, aligned
    # near-constant trainable tensors (zero init) get room to become trained weights
    assert capacity_for(40, **bf16, headroom=0.02, trainable=True) >= SLOT_HEADER_BYTES + 0.72 * 2000
    # never above the codec's worst case (header + raw elements): an incompressible shard always fits
    worst = nzdist.max_compressed_bytes(1000, torch.bfloat16)
    assert capacity_for(5000, **bf16, headroom=0.02, trainable=True) == SLOT_HEADER_BYTES + worst


def test_writes_to_part_of_a_sealed_shard_raise_instead_of_vanishing():
    s = sealed(weights(8, 4))
    part = s[2]  # a decoded copy of one row
    assert torch.equal(part.dense(), weights(8, 4)[2])
    with pytest.raises(RuntimeError, match="would be lost"):
        part.zero_()
    s.open_()
    s[2].zero_()  # an open shard's parts are real views
    s.seal_()
    assert torch.equal(s.dense()[2], torch.zeros(4, dtype=torch.bfloat16))


# -- identity: what storage-keyed callers (accelerate, safetensors, transformers) see ---------------------------
def test_each_shard_has_its_own_stable_data_ptr_and_aliases_share_it():
    a, b = sealed(weights(16, 8)), sealed(weights(16, 8, seed=1))
    param = torch.nn.Parameter(CompressedShard.wrap(weights(4, 4), ShardMeta()))
    ptrs = {a.data_ptr(), b.data_ptr(), param.data_ptr()}
    assert 0 not in ptrs and len(ptrs) == 3
    assert a.detach().data_ptr() == a.view(-1).data_ptr() == a.data_ptr()
    before = a.data_ptr()
    a.open_()
    a.mul_(2.0)
    a.seal_()  # a re-encode moves the payload, not the identity
    assert a.data_ptr() == before and a.encode_count == 2
    assert a.untyped_storage().data_ptr() == before


def test_storage_keyed_callers_tell_shards_apart():
    from safetensors.torch import _find_shared_tensors
    from transformers.pytorch_utils import id_tensor_storage

    a, b = sealed(weights(16, 8)), sealed(weights(16, 8, seed=1))
    # safetensors' shared-storage check (save_file refuses shared tensors): distinct shards are never one storage
    assert sorted(map(sorted, _find_shared_tensors({"a": a, "b": b}))) == [["a"], ["b"]]
    # transformers' storage identity (save_pretrained's tied-weight detection): aliases match, others do not
    assert id_tensor_storage(a) == id_tensor_storage(a.detach()) != id_tensor_storage(b)


def test_accelerate_style_remap_by_data_ptr_keeps_every_parameter():
    # accelerate maps {old.data_ptr(): new} and looks the optimizer's entries up by the same key
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 4)).bfloat16()
    nzdist.fsdp.convert(model)
    ptrs = [p.data_ptr() for p in model.parameters()]
    assert len(set(ptrs)) == len(ptrs) == 4 and 0 not in ptrs


@pytest.mark.parametrize("seal", [True, False])
def test_torch_save_round_trips_a_shard_and_a_parameter(tmp_path, seal):
    ref = weights(32, 8)
    s = CompressedShard.wrap(ref.clone(), ShardMeta(name="w"), owns_storage=True)
    if seal:
        s.seal_()
    p = torch.nn.Parameter(CompressedShard.wrap(ref.clone(), ShardMeta()))
    torch.save({"s": s, "p": p}, tmp_path / "x.pt")
    back = torch.load(tmp_path / "x.pt", weights_only=False)
    assert isinstance(back["s"], CompressedShard) and back["s"].is_sealed == seal
    assert back["s"].data_ptr() != s.data_ptr()
    assert torch.equal(int_view(back["s"].dense()), int_view(ref))
    assert isinstance(back["p"], torch.nn.Parameter) and back["p"].requires_grad
    assert torch.equal(int_view(back["p"].dense()), int_view(ref))


def test_codec_reads_and_writes_shards_through_their_values_not_their_address():
    ref = weights(64, 16)
    s = sealed(ref)
    assert torch.equal(nzdist.compress(s).data, nzdist.compress(ref).data)
    other = sealed(torch.zeros(64, 16, dtype=torch.bfloat16))
    nzdist.decompress(nzdist.compress(ref), out=other)
    assert torch.equal(int_view(other.dense()), int_view(ref))
