"""convert / policies / CompressedOptimizer / memory_report in one process (no process group needed)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

import nzdist
import nzdist.fsdp as nzfsdp
from nzdist.fsdp.policies import _select_bottom_up

from conftest import int_view


class Block(nn.Module):
    def __init__(self, d=32):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d, 2 * d), nn.Linear(2 * d, d)

    def forward(self, x):
        return x + self.fc2(torch.relu(self.fc1(x)))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(50, 32)
        self.blocks = nn.Sequential(Block(), Block())
        self.head = nn.Linear(32, 50)
        self.head.weight = self.emb.weight
        self.register_buffer("steps", torch.zeros(1, dtype=torch.long))

    def forward(self, idx):
        return self.head(self.blocks(self.emb(idx)))


def test_convert_keeps_ties_and_skips_non_float():
    net = Net().bfloat16()
    nzfsdp.convert(net)
    assert net.head.weight is net.emb.weight and isinstance(net.emb.weight, nzfsdp.CompressedShard)
    assert len(nzfsdp.compressed_shards(net)) == len(list(net.parameters()))
    assert type(net.steps) is torch.Tensor


def test_convert_refuses_lossy_for_trainable():
    with pytest.raises(ValueError, match="frozen_codec"):
        nzfsdp.convert(Net(), codec=nzdist.Lossy())


def test_state_dict_is_dense_and_loading_recompresses():
    net = Net().bfloat16()
    ref = copy.deepcopy(net)
    nzfsdp.convert(net)
    nzfsdp.seal(net)
    sd = net.state_dict()
    assert all(type(v) is torch.Tensor for v in sd.values())
    assert all(torch.equal(int_view(sd[k]), int_view(v)) for k, v in ref.state_dict().items() if v.is_floating_point())
    other = Net().bfloat16()
    nzfsdp.convert(other)
    nzfsdp.seal(other)
    other.load_state_dict(sd)
    assert all(s.is_sealed for s in nzfsdp.compressed_shards(other))
    assert torch.equal(int_view(other.blocks[0].fc1.weight.dense()), int_view(ref.blocks[0].fc1.weight.detach()))


@pytest.mark.parametrize("max_open_bytes,compress_state", [(0, False), (2048, True)])
def test_compressed_optimizer_matches_plain_adamw(max_open_bytes, compress_state):
    torch.manual_seed(0)
    net = Net().bfloat16()
    ref = copy.deepcopy(net)
    nzfsdp.convert(net)
    nzfsdp.seal(net)
    opt = nzfsdp.CompressedOptimizer(
        torch.optim.AdamW(net.parameters(), lr=1e-2, weight_decay=0.1),
        max_open_bytes=max_open_bytes,
        compress_state=compress_state,
    )
    opt_ref = torch.optim.AdamW(ref.parameters(), lr=1e-2, weight_decay=0.1)
    if max_open_bytes:
        for p in net.parameters():
            p.grad = torch.zeros_like(p)
        assert len(opt._batches()) > 1
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        idx = torch.randint(0, 50, (4, 8), generator=g)
        for model, o in ((net, opt), (ref, opt_ref)):
            model(idx).float().logsumexp(-1).mean().backward()
            o.step()
            o.zero_grad()
    for (k, a), b in zip(net.state_dict().items(), ref.state_dict().values()):
        assert torch.equal(int_view(a), int_view(b)) if a.is_floating_point() else torch.equal(a, b), k
    assert all(s.is_sealed for s in nzfsdp.compressed_shards(net))
    if compress_state:
        assert any(isinstance(v, nzfsdp.CompressedShard) for st in opt.state.values() for v in st.values())
        report = nzfsdp.memory_report(net, opt)
        assert report.state_bytes < report.state_dense_bytes
        # on the CPU all of it is host memory: the host_* fields offload reports (nzdist.memory_report) agree
        d = nzdist.memory_report(net, opt).as_dict()
        assert (d["host_param_bytes"], d["host_param_dense_bytes"]) == (d["param_bytes"], d["param_dense_bytes"])
        assert (d["host_optim_bytes"], d["host_optim_dense_bytes"]) == (d["state_bytes"], d["state_dense_bytes"])
    dense_state = opt.state_dict()["state"]
    ref_state = opt_ref.state_dict()["state"]
    for i, st in dense_state.items():
        for key, v in st.items():
            assert type(v) is torch.Tensor and torch.equal(v, ref_state[i][key])


def test_optimizer_wrapper_validates():
    with pytest.raises(TypeError):
        nzfsdp.CompressedOptimizer(object())
    with pytest.raises(ValueError, match="losslessly"):
        nzfsdp.CompressedOptimizer(torch.optim.SGD(Net().parameters(), lr=0.1), state_codec=nzdist.Lossy())


def test_memory_report_counts_compressed_and_dense():
    net = Net().bfloat16()
    before = nzfsdp.memory_report(net)
    assert before.compressed_params == 0 and before.param_ratio == 1.0
    nzfsdp.convert(net)
    nzfsdp.seal(net)
    after = nzfsdp.memory_report(net)
    assert after.compressed_params == len(list(net.parameters()))
    assert after.param_dense_bytes == before.param_dense_bytes and after.param_bytes < before.param_bytes


def test_policies_pick_bottom_up():
    net = Net()
    picked = _select_bottom_up(net, nzfsdp.TransformerLayerPolicy({Block}))
    assert picked == list(net.blocks)
    by_size = _select_bottom_up(net, nzfsdp.SizePolicy(min_numel=2000))
    assert net.blocks[0].fc1 in by_size and net.blocks[0] not in by_size  # the Linears claim the Block's params
    assert _select_bottom_up(net, nzfsdp.SizePolicy(min_numel=4000)) == list(net.blocks)  # Linears too small
    assert _select_bottom_up(net, lambda m: isinstance(m, nn.Linear))[:2] == [net.blocks[0].fc1, net.blocks[0].fc2]
    with pytest.raises(TypeError):
        nzfsdp.TransformerLayerPolicy({int})
    with pytest.raises(ValueError):
        nzfsdp.SizePolicy(0)


def test_module_to_and_deepcopy_keep_compressed_state():
    net = Net()
    ref = copy.deepcopy(net).bfloat16()
    nzfsdp.convert(net)
    net.bfloat16()  # nn.Module._apply swaps the subclass in whole (torch.utils.swap_tensors)
    w = net.blocks[0].fc1.weight
    assert isinstance(w, nzfsdp.CompressedShard) and w.dtype == w.dense().dtype == torch.bfloat16
    assert torch.equal(int_view(w.dense()), int_view(ref.blocks[0].fc1.weight.detach()))
    nzfsdp.seal(net)
    twin = copy.deepcopy(net)
    w2 = twin.blocks[0].fc1.weight
    assert isinstance(w2, nn.Parameter) and w2.is_sealed and w2._state is not w._state
    assert torch.equal(int_view(w2.dense()), int_view(w.dense()))
    assert twin.head.weight is twin.emb.weight


def test_lr_scheduler_drives_the_inner_optimizer():
    net = Net()
    nzfsdp.convert(net)
    opt = nzfsdp.CompressedOptimizer(torch.optim.SGD(net.parameters(), lr=1.0))
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    net(torch.zeros(1, 2, dtype=torch.long)).sum().backward()
    opt.step()
    sched.step()
    assert opt.optimizer.param_groups[0]["lr"] == 0.5


def test_step_hooks_encode_once_per_step():
    torch.manual_seed(0)
    net, ref = Net().bfloat16(), None
    ref = copy.deepcopy(net)
    nzfsdp.convert(net)
    nzfsdp.seal(net)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2, weight_decay=0.1)
    nzfsdp.open_during_step(opt)
    opt_ref = torch.optim.AdamW(ref.parameters(), lr=1e-2, weight_decay=0.1)
    before = {id(s): s.encode_count for s in nzfsdp.compressed_shards(net)}
    idx = torch.randint(0, 50, (2, 8))
    for model, o in ((net, opt), (ref, opt_ref)):
        model(idx).float().mean().backward()
        o.step()
    after = nzfsdp.compressed_shards(net)
    assert all(s.encode_count == before[id(s)] + 1 and s.is_sealed for s in after)
    assert torch.equal(int_view(net.blocks[1].fc2.weight.dense()), int_view(ref.blocks[1].fc2.weight.detach()))


def test_bad_arguments_fail_early_with_clear_errors():
    with pytest.raises(NotImplementedError, match="True/False"):
        nzfsdp.fully_shard(Net(), reshard_after_forward=2)
    with pytest.raises(TypeError, match="TransformerLayerPolicy"):
        nzfsdp.shard_model(Net(), policy={Block})
