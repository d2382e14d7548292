"""Test support shared by every test folder and the scripts they launch: real multi-process runs, results
gathered from every rank, and bit-exact comparison.

Tests import it as ``import support`` (pytest puts ``tests/``, the folder of the root conftest, on ``sys.path``);
scripts started by :func:`torchrun` find it on their ``PYTHONPATH``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def int_view(t: torch.Tensor) -> torch.Tensor:
    """The tensor's bit patterns, for bit-exact comparison (NaN payloads included)."""
    return t.contiguous().view({1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()])


def bits(t: torch.Tensor) -> torch.Tensor:
    """The tensor's bytes, flat: equal bytes are equal bits (NaN payloads and -0.0 included)."""
    return t.detach().contiguous().view(-1).view(torch.uint8)


def same_bits(a: dict, b: dict) -> list[str]:
    """Names whose tensors differ in any bit, shape or dtype (or are missing on one side)."""

    def differ(x, y):
        return x.shape != y.shape or x.dtype != y.dtype or not torch.equal(bits(x), bits(y))

    return [k for k in a if k not in b or differ(a[k], b[k])] + [k for k in b if k not in a]


def end_worker(returncode: int = 0) -> None:
    """End a launched script whose work is done and whose result is written: leave the process groups so that
    gloo's threads are joined before interpreter exit (nzdist.teardown explains the abort that skipping this
    causes). DeepSpeed still holds its groups afterwards; only then is interpreter teardown skipped."""
    from nzdist.teardown import comm_threads, end_distributed

    end_distributed()
    if comm_threads():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(returncode)
    sys.exit(returncode)


def emit(result: dict) -> None:
    """In a launched script: gather every rank's result; rank 0 writes ``{"ranks": [...], "ok": ...}`` to
    $NZ_RESULT, so tests assert on every rank, not just rank 0."""
    import torch.distributed as dist

    ranks = [None] * dist.get_world_size()
    dist.all_gather_object(ranks, json.loads(json.dumps(result, default=str)))
    if dist.get_rank() == 0 and os.environ.get("NZ_RESULT"):
        with open(os.environ["NZ_RESULT"], "w") as f:
            json.dump({"ranks": ranks, "ok": all(r.get("ok", True) for r in ranks)}, f, indent=1)


def launch(
    script: Path,
    nproc: int,
    args: list[str],
    *,
    timeout: int = 240,
    env: dict | None = None,
    launcher: list[str] | None = None,
    check: bool = False,
) -> subprocess.CompletedProcess:
    """Start ``script`` on ``nproc`` real processes (torchrun --standalone unless ``launcher`` is given), with
    one OpenMP thread per rank and the checkout, tests/ and the script's folder importable. A hang fails the
    test, never the CI job; ``check`` also fails it on a non-zero exit."""
    import pytest

    full_env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(REPO), str(TESTS), str(script.parent), os.environ.get("PYTHONPATH", "")]),
        **(env or {}),
    }
    launcher = launcher or [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    try:
        proc = subprocess.run(
            [*launcher, str(script), *args],
            env=full_env,
            cwd=script.parent,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"{script.name} hung for {timeout}s:\n{(e.stderr or b'')[-3000:]}")
    if check and proc.returncode != 0:
        pytest.fail(f"{script.name} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc


def torchrun(
    script: Path,
    nproc: int,
    args: list[str],
    tmp_path: Path,
    *,
    timeout: int = 240,
    env: dict | None = None,
    launcher: list[str] | None = None,
) -> dict:
    """:func:`launch` a script that writes its JSON result to $NZ_RESULT (see :func:`emit`); returns it, with
    the exit status and the end of stderr."""
    import pytest

    result = tmp_path / f"{script.stem}.{nproc}.json"
    proc = launch(
        script, nproc, args, timeout=timeout, env={"NZ_RESULT": str(result), **(env or {})}, launcher=launcher
    )
    if not result.exists():
        pytest.fail(f"{script.name} wrote no result (rc {proc.returncode}):\n{proc.stderr[-5000:]}")
    out = json.loads(result.read_text())
    out["returncode"] = proc.returncode
    out["stderr_tail"] = proc.stderr[-3000:]
    return out


def assert_bit_equal(a, b, where: str = "") -> None:
    """``a`` and ``b`` hold the same structure (dicts, lists, tuples) and tensors equal in every bit."""
    if isinstance(b, dict):
        assert isinstance(a, dict) and a.keys() == b.keys(), where
        for k in b:
            assert_bit_equal(a[k], b[k], f"{where}.{k}")
    elif isinstance(b, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_bit_equal(x, y, f"{where}[{i}]")
    elif isinstance(b, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape, where
        assert not same_bits({"t": a}, {"t": b}), where
    else:
        assert a == b, where


# -- tiny Hugging Face models and data for the launched scripts (random init; nothing is fetched) -----------------
VOCAB, CTX = 83, 16


def tiny_llama(tied: bool = True):
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(
        LlamaConfig(
            vocab_size=VOCAB,
            hidden_size=32,
            intermediate_size=72,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=32,
            tie_word_embeddings=tied,
        )
    )


def tiny_gpt2():
    """GPT-2 ties lm_head to wte."""
    from transformers import GPT2Config, GPT2LMHeadModel

    return GPT2LMHeadModel(
        GPT2Config(
            vocab_size=VOCAB,
            n_positions=32,
            n_embd=32,
            n_layer=2,
            n_head=4,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
        )
    )


class TokenData(torch.utils.data.Dataset):
    """Deterministic token sequences for Trainer: the same examples on every run (the sampler splits them by
    rank); labels are the inputs (causal LM)."""

    def __init__(self, n: int = 64):
        g = torch.Generator().manual_seed(7)
        self.ids = torch.randint(0, VOCAB, (n, CTX), generator=g)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


class HostReads:
    """Counts host reads of tensor contents made from nzdist code while active: ``aten._local_scalar_dense``
    (item(), int(t), bool(t), comparisons) through a TorchDispatchMode, and ``Tensor.item/tolist/numpy/cpu/
    __bool__`` by patching. On a GPU each of them waits for the device, so a hot path must have none. ``sites``
    names where each came from (the innermost nzdist frame).

        with HostReads() as reads:
            loss = model(x).sum(); loss.backward()
        assert reads.count == 0, reads.sites
    """

    _PATCHED = ("item", "tolist", "numpy", "cpu", "__bool__")

    def __init__(self):
        import collections

        self.count = 0
        self.sites = collections.Counter()
        self._saved = {}

    @staticmethod
    def _nzdist_site():
        import nzdist

        root = str(Path(nzdist.__file__).parent)
        frame = sys._getframe(2)
        while frame is not None:
            name = frame.f_code.co_filename
            if name.startswith(root):
                return f"{Path(name).relative_to(root)}:{frame.f_lineno} {frame.f_code.co_name}"
            frame = frame.f_back
        return None

    def _hit(self, what: str) -> None:
        site = self._nzdist_site()
        if site is not None:
            self.count += 1
            self.sites[f"{what} at {site}"] += 1

    def __enter__(self):
        from torch.utils._python_dispatch import TorchDispatchMode

        counter = self

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                if func is torch.ops.aten._local_scalar_dense.default:
                    counter._hit("_local_scalar_dense")
                return func(*args, **(kwargs or {}))

        for name in self._PATCHED:
            original = getattr(torch.Tensor, name)
            self._saved[name] = original

            def patched(t, *a, _name=name, _original=original, **k):
                counter._hit(_name)
                return _original(t, *a, **k)

            setattr(torch.Tensor, name, patched)
        self._mode = Mode()
        self._mode.__enter__()
        return self

    def __exit__(self, *exc):
        self._mode.__exit__(*exc)
        for name, original in self._saved.items():
            setattr(torch.Tensor, name, original)
        return False
