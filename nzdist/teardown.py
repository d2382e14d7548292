"""Leaving torch.distributed before the interpreter does, so that no communication thread outlives it.

Why this exists (issue 11, measured on torch 2.13 + gloo): ``destroy_process_group()`` forgets the groups,
but a group's worker threads (``pt_gloo_runloop`` x2, ``gloo_tcp_loop``) stop only when its last reference
goes. After FSDP2 or any DTensor use, torch's DTensor caches (sharding propagation, Python and C++; the
redistribute planner and transform caches; ``MeshTopoInfo``) still hold the ``DeviceMesh``, which holds the
group, so those threads run on into interpreter finalization. A gloo worker that drops the last reference to
a tensor whose Python object it owns (a collective's buffer that Python let go of while the work was still
held, e.g. by ``all_gather_object``) asks for the GIL; once the interpreter is finalizing, CPython ends such
a thread with ``pthread_exit``, whose unwinding reaches a ``noexcept`` destructor (``~AsyncWork``):
``std::terminate``, "terminate called without an active exception", SIGABRT after all work is done.

``end_distributed()`` drops those caches and destroys the groups, so the group's last reference goes then
and its destructor joins the workers (torch releases the GIL there, so a worker still releasing a tensor
finishes) while the interpreter is fully alive. It then checks that no gloo/NCCL thread is left.
"""

from __future__ import annotations

import functools
import gc
import os
import sys
import types
import warnings

COMM_THREAD_PREFIXES = ("pt_gloo", "gloo_", "pt_nccl")  # the names torch and gloo give their threads
_LRU_WRAPPER = type(functools.lru_cache(maxsize=None)(len))  # functools.cache / lru_cache objects


def end_distributed(barrier: bool = True) -> None:
    """Leave every process group so that its communication threads are joined before interpreter exit.

    Call it where a worker's distributed work ends, instead of ``dist.destroy_process_group()``:

        nzdist.teardown.end_distributed()          # all ranks; waits for the others first

    ``barrier=False`` skips waiting for the other ranks (every rank has just taken part in one last
    collective anyway). A no-op when no group is initialised. Warns if communication threads are still
    running afterwards (something outside torch's caches still holds a group).
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    if barrier:
        dist.barrier()
    release_group_references()
    dist.destroy_process_group()
    gc.collect()  # groups reachable only from reference cycles (modules, FSDP state) go now, not at exit
    left = comm_threads()
    if left:
        warnings.warn(
            f"nzdist.teardown: communication threads outlived destroy_process_group: {left}; "
            "something still holds a process group, and the process may abort at exit",
            RuntimeWarning,
            stacklevel=2,
        )


def release_group_references() -> None:
    """Drop what torch.distributed keeps of the groups beyond its own bookkeeping, so that destroying them frees
    them: default arguments that captured the default group (``torch.distributed.nn.functional`` writes
    ``group=group.WORLD``, evaluated on import -- which ``import torch.distributed.fsdp`` does, so importing
    FSDP after ``init_process_group`` pins the group for the life of the process; they become ``None``, the
    default group, which is what they meant), and the memoised results that keep ``DeviceMesh`` objects (and
    through them the groups) alive: every ``functools`` cache defined in a ``torch.distributed`` module,
    DTensor's redistribute-planner cache and its C++ sharding-propagation cache. Caches recompute on demand."""
    import torch
    from torch.distributed import ProcessGroup

    for name, module in list(sys.modules.items()):
        if module is None or not name.startswith("torch.distributed"):
            continue
        for fn in list(vars(module).values()):
            if (
                type(fn) is types.FunctionType
                and fn.__defaults__
                and any(isinstance(d, ProcessGroup) for d in fn.__defaults__)
            ):
                fn.__defaults__ = tuple(None if isinstance(d, ProcessGroup) else d for d in fn.__defaults__)
    if "torch.distributed.tensor" not in sys.modules:  # no DTensor, no mesh caches
        return

    gc.collect()  # meshes of freed models that sit in cycles: gone before the sweep, so it sees less
    for obj in gc.get_objects():
        if type(obj) is _LRU_WRAPPER and str(getattr(obj, "__module__", "")).startswith("torch.distributed"):
            obj.cache_clear()
    redistribute = sys.modules.get("torch.distributed.tensor._redistribute")
    clear_planners = getattr(redistribute, "clear_redistribute_planner_cache", None)
    if clear_planners is not None:
        clear_planners()
    clear_fast_path = getattr(torch._C, "_clear_DTensor_sharding_propagator_cache", None)
    if clear_fast_path is not None:
        clear_fast_path()


def comm_threads() -> list[str]:
    """Names of this process's gloo/NCCL threads (Linux: /proc/self/task; elsewhere always empty)."""
    names = []
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return names
    for tid in tasks:
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                name = f.read().strip()
        except OSError:  # the thread ended meanwhile
            continue
        if name.startswith(COMM_THREAD_PREFIXES):
            names.append(name)
    return sorted(names)
