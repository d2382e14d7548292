"""The compressed copy of each ZeRO-3 partition this rank owns, and the payload sizes of every rank.

One ``CompressedPartitions`` per engine. An entry is valid from ``refresh`` (a collective: encode the local
partition, all-gather the payload sizes) until ``invalidate``. Invalidation only happens where every rank of the
partition group takes part (optimizer step, checkpoint load, ``partition(has_been_updated=True)``), so all ranks
agree on which entries are stale and a stale entry can be refreshed inside the next all-gather of its bucket.

Knowing every rank's payload size ahead of the gather is what lets the all-gather send exactly
max-over-ranks bytes per parameter, with no size exchange (and no device-to-host sync) on the gather path.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import torch

import nzdist.codec as nzcodec
from nzdist.codec.config import MANTISSA_BITS

from .config import NeuzipConfig


@dataclass
class _Entry:
    payload: torch.Tensor | None = None  # this rank's partition (its valid elements), compressed
    sizes: tuple[int, ...] | None = None  # payload bytes of every rank in the partition group; None = stale
    at_rest: bool = False  # the dense partition was released; payload is the only copy


def partition_numel(param) -> int:
    return param.ds_tensor.ds_numel


def valid_numel(param, rank: int) -> int:
    """Elements of rank ``rank``'s partition that belong to the parameter (the tail of the last one is padding)."""
    ps = partition_numel(param)
    return max(0, min(ps, param.ds_numel - rank * ps))


def group_of(param):
    return param.ds_process_group


def rank_in_group(param) -> int:
    # DeepSpeed 0.19 also caches this as param.ds_zero_partition_rank; 0.18 does not.
    from deepspeed import comm as dist

    return dist.get_rank(group=group_of(param))


def group_size(param) -> int:
    from deepspeed import comm as dist

    return dist.get_world_size(group=group_of(param))


def exchange_sizes(local: torch.Tensor, group) -> torch.Tensor:
    """All-gather one int64 per parameter (``local``, on the accelerator, not read); returns the [world, n]
    table of every rank's payload sizes, still on the device (the caller reads it with its other results)."""
    from deepspeed import comm as dist

    world = dist.get_world_size(group=group)
    recv = torch.empty(world * local.numel(), dtype=torch.int64, device=local.device)
    dist.allgather_fn(recv, local.contiguous(), group=group, async_op=False)
    return recv.view(world, local.numel())


def by_group(params: Iterable) -> list[list]:
    """Parameters split by partition group, each list in ds_id order (the order every rank agrees on)."""
    groups = defaultdict(list)
    for p in params:
        groups[id(group_of(p))].append(p)
    return [sorted(g, key=lambda p: p.ds_id) for g in groups.values()]


class CompressedPartitions:
    def __init__(self, cfg: NeuzipConfig):
        self.cfg = cfg
        self.codec = cfg.codec_object()
        self._entries: dict[int, _Entry] = {}  # keyed by ds_id
        self.params: list = []
        self.flat = None  # FlatBufferAtRest when trainable partitions are kept compressed at rest
        self.flat_unsupported: str | None = None  # why not, when compress_at_rest asked for it
        self.optim_state = None  # HostOptimizerState when the host optimizer state is kept compressed
        self._pending_errors: list[tuple[torch.Tensor, list[str]]] = []  # gathers' error words, not read yet

    # --- which parameters -------------------------------------------------------------------------------
    def eligible(self, param) -> bool:
        if param.ds_tensor is None or param.ds_tensor.dtype not in MANTISSA_BITS:
            return False
        if param.ds_numel < self.cfg.min_numel:
            return False
        if self.cfg.params == "frozen" and param.requires_grad:
            return False
        return True

    def adopt(self, params: Iterable) -> list:
        for p in params:
            if self.eligible(p) and p.ds_id not in self._entries:
                self._entries[p.ds_id] = _Entry()
                self.params.append(p)
        return self.params

    def manages(self, param) -> bool:
        return getattr(param, "ds_id", None) in self._entries

    def exact(self, param) -> bool:
        """Whether this parameter's payload decodes to the partition bit for bit."""
        return self.manages(param) and self.cfg.codec == "lossless"

    def is_stale(self, param) -> bool:
        return self._entries[param.ds_id].sizes is None

    def sizes(self, param) -> tuple[int, ...]:
        return self._entries[param.ds_id].sizes

    def payload(self, param) -> torch.Tensor:
        return self._entries[param.ds_id].payload

    # --- state changes ----------------------------------------------------------------------------------
    def invalidate(self, params: Iterable) -> None:
        for p in params:
            e = self._entries.get(getattr(p, "ds_id", None))
            if e is not None and not e.at_rest:
                e.sizes = None

    def refresh(self, params: Iterable) -> None:
        """Encode each parameter's local partition and learn every rank's payload size. Collective over each
        parameter's partition group: every rank must call it with the same parameters. One batched encode and
        one host read per group: the sizes are all-gathered on the device and read together with the encode's
        status."""
        from deepspeed.accelerator import get_accelerator

        params = [p for p in params if self.manages(p)]
        device = torch.device(get_accelerator().current_device_name())
        for group in by_group(params):
            rank = rank_in_group(group[0])
            entries = [self._entries[p.ds_id] for p in group]
            # An at-rest payload is already the partition; an empty partition (all padding) sends nothing.
            todo = [i for i, (p, e) in enumerate(zip(group, entries)) if not e.at_rest and valid_numel(p, rank)]
            batch = nzcodec.EncodeBatch(
                [group[i].ds_tensor.detach().narrow(0, 0, valid_numel(group[i], rank)) for i in todo],
                [self.codec] * len(todo),
            )
            known = [e.payload.numel() if e.at_rest and e.payload is not None else 0 for e in entries]
            local = nzcodec.upload(torch.tensor(known, dtype=torch.int64), device)
            if todo:
                local[nzcodec.upload(torch.tensor(todo), device)] = batch.status[:, 0].to(device)
            table = exchange_sizes(local, group_of(group[0]))
            host = nzcodec.read_back(torch.cat([batch.status.view(-1).to(device), table.view(-1)]))
            status = [host[2 * j : 2 * j + 2] for j in range(len(todo))]
            sizes = host[2 * len(todo) :]
            payloads = dict(zip(todo, batch.finish(status)))
            n = len(group)
            for i, (p, e) in enumerate(zip(group, entries)):
                if i in payloads:
                    e.payload = payloads[i].data.to(p.ds_tensor.device)
                elif not e.at_rest:
                    e.payload = torch.empty(0, dtype=torch.uint8, device=p.ds_tensor.device)
                e.sizes = tuple(int(sizes[r * n + i]) for r in range(len(sizes) // n))
                if self.cfg.compress_at_rest and not p.requires_grad:
                    self._release(p, e)

    def payload_tensor(self, param, rank: int) -> nzcodec.CompressedTensor:
        """This rank's payload of ``param`` with the facts the host knows (no header read)."""
        return nzcodec.CompressedTensor(
            self._entries[param.ds_id].payload, (valid_numel(param, rank),), param.ds_tensor.dtype
        )

    # --- compressed at rest (frozen, lossless) ----------------------------------------------------------
    def _release(self, param, e: _Entry) -> None:
        # Keep the tensor object (DeepSpeed hangs ds_numel/status/final_location on it); drop its storage.
        param.ds_tensor.data = torch.empty(0, dtype=param.ds_tensor.dtype, device=param.ds_tensor.device)
        e.at_rest = True

    def materialize(self, params: Iterable | None = None) -> tuple:
        """Give at-rest partitions a dense copy again (before DeepSpeed reads or writes ds_tensor): the frozen
        ones among ``params`` and, if any of ``params`` lives in it, the trainable flat buffer (all by default).
        Returns a token for ``release_again``."""
        params = self.params if params is None else list(params)
        done, cts, outs = [], [], []
        for p in params:
            e = self._entries.get(getattr(p, "ds_id", None))
            if e is None or not e.at_rest:
                continue
            ps, rank = partition_numel(p), rank_in_group(p)
            dense = torch.zeros(ps, dtype=p.ds_tensor.dtype, device=p.ds_tensor.device)
            n = valid_numel(p, rank)
            if n:
                cts.append(self.payload_tensor(p, rank))
                outs.append(dense.narrow(0, 0, n))
            p.ds_tensor.data = dense
            e.at_rest = False
            done.append(p)
        if cts:
            nzcodec.decompress_batch(cts, outs)  # one call, one error read
        flat = False
        if self.flat is not None and self.flat.released:
            members = self.flat.member_ids
            if any(id(p) in members for p in params):
                self.flat.allocate(decode=True)
                flat = True
        return done, flat

    def release_again(self, token: tuple) -> None:
        """Drop what ``materialize`` restored, where the payloads are still current (nothing was written)."""
        done, flat = token
        for p in done:
            e = self._entries[p.ds_id]
            if e.sizes is not None and not e.at_rest:
                self._release(p, e)
        if flat:
            self.settle()

    def settle(self) -> None:
        """Free the trainable flat buffer if it is kept at rest and every payload in it is current."""
        if self.flat is not None and not self.flat.released:
            if all(not self.is_stale(p) for p in self.flat.params if self.manages(p)):
                self.flat.release()

    # --- decode errors of the gathers ---------------------------------------------------------------------
    def error_words(self, labels: list[str], device) -> torch.Tensor:
        """Fresh error words for a gather's decode (one per job, labelled), read at the next ``check``."""
        words = torch.zeros(len(labels), dtype=torch.int32, device=device)
        self._pending_errors.append((words, labels))
        return words

    def check(self) -> None:
        """Raise FormatError for any gather decode since the last check that found corrupt data: one host read
        for all of them. Called before every optimizer step (hooks.py), so no update uses a corrupt decode."""
        pending, self._pending_errors = self._pending_errors, []
        if not pending:
            return
        words = nzcodec.read_back(torch.cat([w.to(pending[0][0].device) for w, _ in pending]))
        labels = [label for _, ls in pending for label in ls]
        bad = [(label, w) for label, w in zip(labels, words) if w]
        if bad:
            from nzdist.codec.errors import describe_error_word

            raise nzcodec.FormatError(
                "nzdist.deepspeed: corrupt all-gather payloads ("
                + "; ".join(f"{label}: {describe_error_word(w)}" for label, w in bad)
                + ")"
            )

    # --- reporting --------------------------------------------------------------------------------------
    def memory_report(self) -> dict:
        """Bytes this rank holds for the managed partitions. ``partition_bytes``: their dense size;
        ``payload_bytes``: all compressed copies; ``released_bytes``: dense partitions dropped at rest, whose
        only copy is ``at_rest_payload_bytes`` of payload; ``resident_bytes``: what is held now (dense + payload)."""
        dense = payload = released = at_rest_payload = host = host_dense = 0
        for p in self.params:
            e = self._entries[p.ds_id]
            nbytes = partition_numel(p) * p.ds_tensor.element_size()
            size = e.payload.numel() if e.payload is not None else 0
            dense += nbytes
            payload += size
            held_dense = 0 if p.ds_tensor.numel() == 0 else nbytes
            if p.ds_tensor.numel() == 0:  # released (frozen at rest, or the trainable flat buffer freed)
                released += nbytes
                at_rest_payload += size
            if p.ds_tensor.device.type == "cpu":  # offload_param cpu, or a CPU accelerator
                host += held_dense + (size if e.payload is not None and e.payload.device.type == "cpu" else 0)
                host_dense += nbytes
        return {
            "params": len(self.params),
            "partition_bytes": dense,
            "payload_bytes": payload,
            "released_bytes": released,
            "at_rest_payload_bytes": at_rest_payload,
            "resident_bytes": dense - released + payload,
            "trainable_at_rest": self.flat is not None,
            "trainable_at_rest_unsupported": self.flat_unsupported,
            "host_param_bytes": host,
            "host_param_dense_bytes": host_dense,
        }
