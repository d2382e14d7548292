"""Delta checkpoints: exact bit-pattern deltas, chains with a full save every K, and base protection."""

import shutil

import pytest
import torch

import nzdist.checkpoint as ckpt
from nzdist.checkpoint import delta

from ckpt_testutil import assert_bit_equal, step, tiny_training_state


@pytest.mark.parametrize(
    "dtype,itype", [(torch.bfloat16, torch.int16), (torch.float16, torch.int16), (torch.float32, torch.int32)]
)
@pytest.mark.parametrize("method", [delta.SUB, delta.XOR, delta.XOR_NZ, delta.AUTO])
def test_delta_is_exact_on_any_bit_pattern(dtype, itype, method):
    g = torch.Generator().manual_seed(0)
    info = torch.iinfo(itype)
    # Every bit pattern is fair game: NaNs with payloads, infinities, subnormals, -0, sign flips.
    a = torch.randint(info.min, info.max, (5000,), dtype=torch.int64, generator=g).to(itype).view(dtype)
    b = torch.randint(info.min, info.max, (5000,), dtype=torch.int64, generator=g).to(itype).view(dtype)
    b[:2500] = a[:2500]
    got = delta.decode(delta.encode(b, a, method), a)
    assert torch.equal(got.view(itype), b.view(itype))


def test_small_change_costs_little():
    w = torch.randn(1 << 16, generator=torch.Generator().manual_seed(0))
    w2 = w + 1e-4 * torch.randn(1 << 16, generator=torch.Generator().manual_seed(1)) * w.abs()
    # A relative change of ~1e-4 touches the low ~10 of 23 mantissa bits: well under half of 32 bits.
    assert len(delta.encode(w2, w)) < 0.5 * w.numel() * 4


def _sd(model, opt):
    return {"model": model.state_dict(), "optim": opt.state_dict()}


def _load_fresh(path):
    model, opt = tiny_training_state(seed=7)
    sd = _sd(model, opt)
    ckpt.load(sd, path)
    return sd


def test_chain_full_every_and_exact_loads(tmp_path):
    model, opt = tiny_training_state()
    refs, results = [], []
    names = ["a", "b", "c", "d"]
    for i, name in enumerate(names):
        prev = tmp_path / names[i - 1] if i else None
        results.append(ckpt.save(_sd(model, opt), tmp_path / name, previous=prev, full_every=3))
        refs.append({k: v.clone() for k, v in model.state_dict().items()})
        step(model, opt, 1, seed=i + 10)
    assert [r.kind for r in results] == ["full", "delta", "delta", "full"]
    assert [ckpt.manifest(tmp_path / n).chain_depth for n in names] == [0, 1, 2, 0]
    for name, ref in zip(names, refs):
        assert_bit_equal(_load_fresh(tmp_path / name)["model"], ref, name)
    # Deltas are smaller than the full save of the same state (int step counters and tiny tensors included).
    assert results[1].stored_bytes < results[0].stored_bytes


def test_delete_refuses_a_needed_base(tmp_path):
    model, opt = tiny_training_state()
    ckpt.save(_sd(model, opt), tmp_path / "a")
    step(model, opt, 1)
    ckpt.save(_sd(model, opt), tmp_path / "b", previous=tmp_path / "a")
    with pytest.raises(ckpt.CheckpointInUseError, match=r"a.*\bb\b"):
        ckpt.delete(tmp_path / "a")
    assert (tmp_path / "a").exists()
    assert ckpt.dependents(tmp_path / "a") == [str(tmp_path / "b")]
    ckpt.delete(tmp_path / "b")
    assert ckpt.dependents(tmp_path / "a") == []
    ckpt.delete(tmp_path / "a")
    assert not (tmp_path / "a").exists()


def test_missing_or_replaced_base_is_a_clear_error(tmp_path):
    model, opt = tiny_training_state()
    ckpt.save(_sd(model, opt), tmp_path / "a")
    step(model, opt, 1)
    ckpt.save(_sd(model, opt), tmp_path / "b", previous=tmp_path / "a")
    with pytest.raises(ckpt.CheckpointInUseError, match="replace"):  # nzdist will not overwrite a needed base
        ckpt.save(_sd(model, opt), tmp_path / "a")
    shutil.rmtree(tmp_path / "a")  # ... but behind its back a different checkpoint can take the base's place
    ckpt.save(_sd(model, opt), tmp_path / "a")
    with pytest.raises(ckpt.CheckpointError, match="replaced"):
        _load_fresh(tmp_path / "b")
    shutil.rmtree(tmp_path / "a")  # removed behind nzdist's back
    with pytest.raises(ckpt.CheckpointError, match="base .* is missing"):
        _load_fresh(tmp_path / "b")


def test_delta_against_itself_is_refused(tmp_path):
    ckpt.save({"a": torch.ones(2)}, tmp_path / "a")
    with pytest.raises(ValueError, match="itself"):
        ckpt.save({"a": torch.ones(2)}, tmp_path / "a", previous=tmp_path / "a")


def test_nothing_in_common_with_base_is_a_full_checkpoint(tmp_path):
    ckpt.save({"a": torch.randn(100)}, tmp_path / "a")
    res = ckpt.save({"b": torch.randn(100)}, tmp_path / "b", previous=tmp_path / "a")
    assert res.kind == "full" and ckpt.manifest(tmp_path / "b").base is None
    assert ckpt.dependents(tmp_path / "a") == []
    ckpt.delete(tmp_path / "a")  # b does not need it
    got = {"b": torch.zeros(100)}
    ckpt.load(got, tmp_path / "b")
