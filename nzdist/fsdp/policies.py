"""Wrapping policies in the spirit of FSDP1's auto-wrap: which submodules get their own FSDP2 group.

Each group is all-gathered (and decoded) as one unit just before its forward; smaller groups mean a lower
peak of unsharded parameters, larger groups fewer, bigger collectives -- one group per transformer block is
the usual choice for multi-node jobs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from torch import nn

from .fully_shard import convert, fully_shard


@dataclass(frozen=True)
class TransformerLayerPolicy:
    """Wrap every instance of these classes: ``TransformerLayerPolicy({LlamaDecoderLayer})``."""

    layer_classes: frozenset = field(default_factory=frozenset)

    def __init__(self, layer_classes: Iterable[type]):
        classes = frozenset(layer_classes)
        if not classes or not all(isinstance(c, type) and issubclass(c, nn.Module) for c in classes):
            raise TypeError(f"TransformerLayerPolicy needs nn.Module classes, got {set(layer_classes)!r}")
        object.__setattr__(self, "layer_classes", classes)

    def __call__(self, module: nn.Module) -> bool:
        return isinstance(module, tuple(self.layer_classes))


@dataclass(frozen=True)
class SizePolicy:
    """Wrap a module once the parameters it would own (not already owned by a wrapped descendant) reach
    ``min_numel`` elements -- FSDP1's ``size_based_auto_wrap_policy``."""

    min_numel: int = 100_000_000

    def __post_init__(self) -> None:
        if not isinstance(self.min_numel, int) or self.min_numel < 1:
            raise ValueError(f"min_numel must be a positive int, got {self.min_numel!r}")

    def __call__(self, module: nn.Module, unwrapped_numel: int) -> bool:
        return unwrapped_numel >= self.min_numel


def shard_model(model: nn.Module, policy: Callable | None = None, **fully_shard_kwargs) -> nn.Module:
    """Shard ``model`` bottom-up: every submodule the policy selects gets its own group, then the root.

    ``policy`` is a :class:`TransformerLayerPolicy`, a :class:`SizePolicy`, or any ``(module) -> bool``.
    Keyword arguments go to :func:`nzdist.fsdp.fully_shard` (``mesh``, ``codec``, ``mp_policy``, ...).
    """
    if policy is not None and not callable(policy):
        raise TypeError(
            f"policy must be TransformerLayerPolicy, SizePolicy or a callable (module) -> bool, got "
            f"{type(policy).__name__}; for a set of layer classes use TransformerLayerPolicy({{...}})"
        )
    codec_keys = ("codec", "frozen_codec", "headroom", "on_overflow", "mp_storage")
    codec_kwargs = {k: fully_shard_kwargs[k] for k in codec_keys if k in fully_shard_kwargs}
    convert(model, **codec_kwargs)  # once, up front, so parameters tied across groups stay one object
    if policy is not None:
        for module in _select_bottom_up(model, policy):
            fully_shard(module, **fully_shard_kwargs)
    fully_shard(model, **fully_shard_kwargs)
    return model


def _select_bottom_up(model: nn.Module, policy: Callable) -> list[nn.Module]:
    """Modules the policy picks, children before parents; the root is never picked (it is sharded last)."""
    chosen: list[nn.Module] = []
    owned: set[int] = set()  # ids of parameters already claimed by a chosen descendant

    def visit(module: nn.Module) -> None:
        for child in module.children():
            visit(child)
        if module is model:
            return
        if isinstance(policy, SizePolicy):
            numel = sum(p.numel() for p in module.parameters() if id(p) not in owned)
            pick = policy(module, numel)
        else:
            pick = bool(policy(module))
        if pick:
            chosen.append(module)
            owned.update(id(p) for p in module.parameters())

    visit(model)
    return chosen
