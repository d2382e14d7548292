"""The codec work of an optimizer step, batched: every shard of a step batch is decoded by one ``decode_into``
call (``open_states``) and re-encoded by one batched encode (``seal_states``), with one host read for the whole
batch, in which the ranks also agree on who spills and the opening decode's error words come back.

After the encode is staged, each payload's size stays on the device. For every parameter whose capacity the
ranks agreed (GatherPlan), the overflow test ``header + size > capacity`` (where raw would not fit either) is
computed there too, as rank r's entry of a per-group flag vector; one all-reduce(MAX) per process group makes
every rank's flags everyone's, and a single read brings the sizes and the agreed flags to the host together. The
all-gather hooks then know from host state alone which ranks spill (``GatherPlan.spilled``).

Collective discipline: ranks must pass the same parameters in the same order (an optimizer's parameters with
gradients, as every rank has them); the flag vectors are laid out by that list only, never by local sizes,
dirtiness or empty shards, so their lengths agree on every rank.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from nzdist.codec import EncodeBatch, FormatError, compress, decode_into, max_compressed_bytes, read_back, upload
from nzdist.codec.errors import describe_error_word

from .remainder import join, split
from .slot import SLOT_HEADER_BYTES, CapacityError
from .state import ShardState


class Opened:
    """States decoded by :func:`open_states`, and the error words of that decode (read by seal_states)."""

    def __init__(self, states: list[ShardState], errors: torch.Tensor | None):
        self.states, self.errors = states, errors


def open_states(states: list[ShardState]) -> Opened:
    """Decode every sealed state of ``states`` into a fresh dense buffer in one call per device, nothing read
    back: a corrupt resident payload is reported by the ``seal_states`` that closes the batch, before any new
    payload replaces the old one."""
    states = list({id(st): st for st in states}.values())
    todo = [st for st in states if st.dense is None and st.numel > 0]
    if not todo:
        return Opened([], None)
    device = todo[0].device
    if any(st.device != device for st in todo):
        raise NotImplementedError("nzdist.fsdp: an optimizer step batch with shards on several devices")
    errors = torch.zeros(len(todo), dtype=torch.int32, device=device)
    # A split shard (remainder.py) decodes its bf16 half, then joins the remainder on the device.
    outs = [
        torch.empty(st.shape, dtype=torch.bfloat16 if st.rest is not None else st.dtype, device=device) for st in todo
    ]
    payloads = [st.gather_ct if st.rest is not None else st.ct for st in todo]
    decode_into([p.data for p in payloads], outs, errors, slots=False, grains=[p.chunk_elems for p in payloads])
    for st, out in zip(todo, outs):
        if st.rest is not None:
            out = join(out, st.rest, torch.empty(st.shape, dtype=st.dtype, device=device))
        st.dense, st.owns_storage, st.dirty = out, True, False
    return Opened(todo, errors)


def seal_states(states: list[ShardState], *, agree: bool = True, opened: Opened | None = None) -> None:
    """Encode every changed state of ``states`` and release the dense buffers; with ``agree``, re-agree the
    spills of every parameter among them whose capacity is fixed (a collective over each parameter's group).
    ``opened``: the batch's :func:`open_states`, whose error words come back in the same read."""
    states = list({id(st): st for st in states}.values())
    if not states:
        return
    plans = []
    if agree:
        seen = set()
        for st in states:
            plan = st.plan
            if plan.capacity is not None and id(plan) not in seen:
                seen.add(id(plan))
                plans.append(plan)
    devices = list({st.device: None for st in states})
    if len(devices) > 1:  # e.g. CPU-offloaded parameters next to GPU optimizer state: one pass per device
        for device in devices:
            seal_states([st for st in states if st.device == device], agree=agree, opened=opened)
        return
    todo = [st for st in states if st.needs_encode()]
    if not plans and not todo:
        for st in states:
            st.release()
        return
    device = devices[0]
    # What each state encodes: its own values, and under mixed precision what travels -- the bf16 half of a split
    # shard (remainder.py; then nothing else), or the cast next to the fp32 payload.
    tensors, codecs, slots, rests = [], [], [], {}
    for st in todo:
        gather = st.plan.dtype
        if st.splits_for(gather):
            hi, rests[id(st)] = split(st.dense)
            slots.append([len(tensors)])
            tensors.append(hi)
            codecs.append(st.meta.codec)
            continue
        slots.append([len(tensors)])
        tensors.append(st.dense)
        codecs.append(st.meta.codec)
        if gather is not None and gather != st.dtype:
            slots[-1].append(len(tensors))
            tensors.append(st.dense.to(gather))
            codecs.append(st.meta.codec)
    batch = EncodeBatch(tensors, codecs)
    open_errors = [] if opened is None or opened.errors is None else [opened.errors.long().to(device)]
    # Whether this rank's opening decode failed travels in the agreement too: every rank raises, none hangs.
    local_bad = (open_errors[0] != 0).any().int().view(1) if open_errors else None
    flags = _overflow_flags(plans, states, todo, slots, batch.status, device, local_bad)
    n = len(tensors)
    counts = [r.count.view(1).to(device) for r in rests.values()]
    host = read_back(
        torch.cat([batch.status.view(-1).to(device), *[f.long() for _, f in flags], *counts, *open_errors])
    )
    status = [host[2 * i : 2 * i + 2] for i in range(n)]
    at, remote_bad = 2 * n, False
    for _, f in flags:  # each group's last word: some rank's opening decode failed
        remote_bad |= bool(host[at + f.numel() - 1])
        at += f.numel()
    if open_errors or remote_bad:
        words = host[len(host) - opened.errors.numel() :] if open_errors else []
        bad = [(st, w) for st, w in zip(opened.states, words) if w]
        if bad or remote_bad:  # the old payloads stay: nothing computed from a corrupt decode is installed
            for st in states:
                if st.ct is not None or st.rest is not None:
                    st.dense, st.dirty = None, False
            where = "; ".join(f"{st.meta.name or 'a parameter'}: {describe_error_word(w)}" for st, w in bad)
            raise FormatError(
                "nzdist.fsdp: corrupt resident payload found when the optimizer step decoded it "
                + (f"({where})" if bad else "on another rank (this rank's decoded cleanly)")
            )
    payloads = batch.finish(status)
    at_counts = 2 * n + sum(f.numel() for _, f in flags)
    found = dict(zip(rests, host[at_counts : at_counts + len(counts)]))
    for st, idx in zip(todo, slots):
        rest = rests.get(id(st))
        if rest is None:
            st.install(payloads[idx[0]], payloads[idx[1]] if len(idx) > 1 else None)
        elif found[id(st)] <= rest.room:
            st.install_split(payloads[idx[0]], rest)
        else:  # more exceptions than the table holds (NaNs, say): both payloads this time, two more encodes
            st.install(compress(st.dense, codec=st.meta.codec), payloads[idx[0]])
    for st in states:
        st.release()
    at = 2 * n
    for group_plans, f in flags:
        world = group_plans[0].world
        words = host[at : at + f.numel()]
        at += f.numel()
        for j, plan in enumerate(group_plans):
            plan.spilled = tuple(r for r in range(world) if words[j * world + r])
    _report_spills(plans)


def _overflow_flags(plans, states, todo, slots, status, device, local_bad) -> list[tuple[list, torch.Tensor]]:
    """Per process group: (its plans, the all-reduced int32 flags [len(plans) * world + 1]) on ``device``. A fresh
    payload is tested on the device (its size is not read yet); an unchanged one from its host-known size. The
    last word: ``local_bad`` (this rank's opening decode failed), so every rank learns it."""
    sizes = status[:, 0].to(device) if status.numel() else torch.zeros(0, dtype=torch.int64, device=device)
    fresh = {id(st.plan): idx[-1] for st, idx in zip(todo, slots)}  # the encoded payload that travels
    holder = {id(st.plan): st for st in states}
    groups: dict[int, list] = {}
    for plan in plans:
        groups.setdefault(id(plan.group), []).append(plan)
    out = []
    for group_plans in groups.values():
        world, rank = group_plans[0].world, group_plans[0].rank
        flags = torch.zeros(len(group_plans) * world + 1, dtype=torch.int32, device=device)
        if local_bad is not None:
            flags[-1:] = local_bad
        pos, which, caps, known = [], [], [], []
        for j, plan in enumerate(group_plans):
            st = holder[id(plan)]
            worst = max_compressed_bytes(st.numel, plan.dtype, st.meta.codec, ndim=len(st.shape))
            if st.numel == 0 or SLOT_HEADER_BYTES + worst <= plan.capacity:
                continue  # nothing to send, or the capacity holds any payload the codec can write
            room = plan.capacity - SLOT_HEADER_BYTES
            if id(plan) in fresh:
                pos.append(j * world + rank)
                which.append(fresh[id(plan)])
                caps.append(room)
            else:
                payload = st.gather_ct if plan.dtype != st.dtype else st.ct
                if payload is not None and payload.nbytes > room:
                    known.append(j * world + rank)
        if pos:
            over = sizes[upload(torch.tensor(which), device)] > upload(torch.tensor(caps, dtype=torch.int64), device)
            flags[upload(torch.tensor(pos), device)] = over.int()
        if known:
            flags[upload(torch.tensor(known), device)] = 1
        if world > 1:
            dist.all_reduce(flags, op=dist.ReduceOp.MAX, group=group_plans[0].group)
        out.append((group_plans, flags))
    return out


def _report_spills(plans) -> None:
    raising = [p for p in plans if p.spilled and p.on_overflow == "raise"]
    if raising:
        detail = "; ".join(f"{p.name or 'a parameter'}: rank(s) {list(p.spilled)}" for p in raising)
        raise CapacityError(
            f"nzdist.fsdp: compressed shards outgrew the all-gather capacity agreed at their first all-gather "
            f"({detail}). Use a larger headroom (nzdist.fsdp.fully_shard(..., headroom=...)) or "
            "on_overflow='spill'; capacities never change during a module's life because FSDP2 fixes its buffer "
            "sizes."
        )
