"""Run under torchrun (gloo, CPU): FSDP2 model + AdamW saved with nzdist.checkpoint on one world size and loaded
on another. ``save OUT``: train, save full checkpoint OUT/a, train more, save delta OUT/b (previous=a), and
write the full (unsharded) reference states of both to OUT/ref_{a,b}.pt. ``load OUT NAME...``: build the same
model on this world size, load each OUT/NAME, and compare the unsharded states with OUT/ref_NAME.pt bit for bit."""

import copy
import sys

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

import nzdist.checkpoint as ckpt

from ckpt_testutil import end_worker


def build():
    torch.manual_seed(0)
    # Odd widths: 18 and 10 rows shard unevenly over 4 ranks, so loading reshards across padded shards.
    model = torch.nn.Sequential(torch.nn.Linear(8, 18), torch.nn.ReLU(), torch.nn.Linear(18, 10))
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    for layer in (model[0], model[2]):
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model, torch.optim.AdamW(model.parameters(), lr=1e-2)


def train(model, opt, steps, seed):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(4, 8, generator=g)
        model(x).pow(2).mean().backward()
        opt.step()
        opt.zero_grad()


def full_state(model, opt):
    # Deep copy: the optimizer's "step" tensors come back by reference and later steps would change them.
    sd = get_state_dict(model, opt, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return copy.deepcopy(sd)


def flat(d, prefix=""):
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flat(v, key + "."))
        elif isinstance(v, list):
            out.update(flat(dict(enumerate(v)), key + "."))
        else:
            out[key] = v
    return out


def check_load(out, name):
    model, opt = build()
    train(model, opt, 1, seed=9)  # different values, and optimizer state exists to load into
    msd, osd = get_state_dict(model, opt)
    sd = {"model": msd, "optim": osd}
    ckpt.load(sd, f"{out}/{name}")
    set_state_dict(model, opt, model_state_dict=sd["model"], optim_state_dict=sd["optim"])
    got = flat(dict(zip(("model", "optim"), full_state(model, opt))))
    if dist.get_rank() == 0:
        ref = flat(dict(zip(("model", "optim"), torch.load(f"{out}/ref_{name}.pt", weights_only=False))))
        assert got.keys() == ref.keys(), (sorted(got), sorted(ref))
        for k in ref:
            a, b = got[k], ref[k]
            if isinstance(b, torch.Tensor):
                assert a.dtype == b.dtype and torch.equal(a.view(-1).view(torch.uint8), b.view(-1).view(torch.uint8)), k
            else:
                assert a == b, (k, a, b)
        print(f"OK world={dist.get_world_size()} {name}: {len(ref)} entries bit-identical", flush=True)


def main():
    dist.init_process_group("gloo")
    mode, out = sys.argv[1], sys.argv[2]
    if mode == "save":
        model, opt = build()
        train(model, opt, 3, seed=1)
        msd, osd = get_state_dict(model, opt)
        ckpt.save({"model": msd, "optim": osd}, f"{out}/a")
        ref_a = full_state(model, opt)
        train(model, opt, 2, seed=2)
        msd, osd = get_state_dict(model, opt)
        res = ckpt.save({"model": msd, "optim": osd}, f"{out}/b", previous=f"{out}/a")
        assert res.kind == "delta", res
        ref_b = full_state(model, opt)
        if dist.get_rank() == 0:
            torch.save(ref_a, f"{out}/ref_a.pt")
            torch.save(ref_b, f"{out}/ref_b.pt")
    else:
        for name in sys.argv[3:]:
            check_load(out, name)


if __name__ == "__main__":
    main()
    end_worker()  # after main: its model and optimizer (which hold the process group) are gone
