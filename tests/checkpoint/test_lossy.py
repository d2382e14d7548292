"""Opt-in lossy checkpoints: train, save lossy, restore into a fresh model/optimizer, continue; repeated over
several restore cycles the loss stays within the stated tolerance of an uninterrupted run, while a codec that
is too coarse visibly breaks that tolerance (so the check can fail)."""

import pytest
import torch

import nzdist.checkpoint as ckpt
from nzdist.checkpoint import lossy

STEPS, EVERY = 300, 50  # 5 lossy save -> restore cycles
FINAL_TOL = 0.05  # mean loss over the last 20 steps within 5% of the uninterrupted run
STEP_TOL = 0.10  # and every step after the first restore within 10%


def _make(seed):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(64, 256), torch.nn.GELU(), torch.nn.Linear(256, 256), torch.nn.GELU(), torch.nn.Linear(256, 16)
    )
    return model, torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)


def _batch(i, teacher):
    x = torch.randn(64, 64, generator=torch.Generator().manual_seed(1000 + i))
    with torch.no_grad():
        return x, teacher(x)


def _run(tmp_path, codec, delta):
    torch.manual_seed(123)
    teacher = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Tanh(), torch.nn.Linear(64, 16))
    model, opt = _make(0)
    losses, ratios, prev = [], [], None
    for i in range(STEPS):
        x, y = _batch(i, teacher)
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
        if codec is not None and (i + 1) % EVERY == 0:
            path = tmp_path / f"step{i + 1}"
            res = ckpt.save(
                {"model": model.state_dict(), "optim": opt.state_dict()},
                path,
                codec=codec,
                previous=prev if delta else None,
            )
            ratios.append(res.dense_bytes / res.stored_bytes)
            prev = path
            model, opt = _make(99)  # a fresh process would start from other weights and an empty optimizer
            x, y = _batch(0, teacher)
            torch.nn.functional.mse_loss(model(x), y).backward()
            opt.step()
            opt.zero_grad()
            sd = {"model": model.state_dict(), "optim": opt.state_dict()}
            ckpt.load(sd, path)
            model.load_state_dict(sd["model"])
            opt.load_state_dict(sd["optim"])
    return losses, ratios


def _deviation(losses, ref):
    final = abs(sum(losses[-20:]) - sum(ref[-20:])) / sum(ref[-20:])
    worst = max(abs(a - b) / b for a, b in zip(losses[EVERY:], ref[EVERY:]))
    return final, worst


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Tiny matmuls: a second thread only adds contention on the shared 2-core CI box.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("ref"), None, False)[0]


@pytest.mark.parametrize("delta", [False, True], ids=["full", "delta"])
def test_lossy_restore_cycles_stay_within_tolerance(tmp_path, reference, delta):
    losses, ratios = _run(tmp_path, ckpt.Quantized(), delta)
    final, worst = _deviation(losses, reference)
    assert final <= FINAL_TOL and worst <= STEP_TOL, (final, worst)
    assert losses != reference  # the restores really were lossy
    assert min(ratios) > 6  # fp32 model + AdamW state: 32 bits -> under ~5.3 bits per value
    if delta:  # quantisation-aware deltas: optimizer-state codes are mostly 0, weights step by their change
        assert min(ratios[1:]) > max(8, ratios[0])


def test_too_coarse_breaks_tolerance(tmp_path, reference):
    losses, _ = _run(tmp_path, ckpt.Quantized(weight_bits=2, exp_avg_bits=2), False)
    final, worst = _deviation(losses, reference)
    assert final > FINAL_TOL or worst > STEP_TOL


def test_quantiser_error_bounds():
    g = torch.Generator().manual_seed(0)
    cfg = ckpt.Quantized(weight_bits=6, block_size=64)
    w = torch.randn(10_000, generator=g)
    r = lossy.decode(lossy.encode(w, "weight", cfg), w.shape, w.dtype)
    # any element is off by at most half its block step (block absmax / 31)
    bound = torch.cat([b.abs().max().expand(64) for b in torch.nn.functional.pad(w, (0, 240)).view(-1, 64)])
    assert ((r - w).abs() <= bound[:10_000] / 31 / 2 + 1e-7).all()
    v = torch.rand(10_000, generator=g) ** 4
    v[:10] = 0
    rv = lossy.decode(lossy.encode(v, "exp_avg_sq", cfg), v.shape, v.dtype)
    assert (rv[:10] == 0).all()
    ratio = rv[10:] / v[10:]
    assert (ratio <= 2**0.5 + 1e-6).all() and (ratio >= 2**-0.5 - 1e-6).all()
    # A delta against a reconstruction keeps the same bound: no drift along a chain.
    w2 = w + 1e-3 * torch.randn(10_000, generator=g)
    r2 = lossy.decode(lossy.encode(w2, "weight", cfg, ref=r), w.shape, w.dtype, ref=r)
    bound2 = torch.cat([b.abs().max().expand(64) for b in torch.nn.functional.pad(w2, (0, 240)).view(-1, 64)])
    assert ((r2 - w2).abs() <= bound2[:10_000] / 31 / 2 + 1e-6).all()
