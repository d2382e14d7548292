"""Stress the main job's teardown: run its per-rank worker N times and count the runs that fail after the work.

    python .ci/stress_teardown.py                 # 50 runs, 2 ranks, gloo, a tiny preset; ~10-25 s a run
    python .ci/stress_teardown.py --runs 200 --threads-per-rank 8 --keep /tmp/teardown-logs

Issue 11: the main job sometimes printed its whole report and then died with "terminate called without an
active exception" (SIGABRT on rank 0, torchrun reporting FAILED) -- about 1 run in 14. Cause and fix:
``nzdist/teardown.py``. Each run here is the real thing, ``torchrun -m nzdist.launch.compare`` (both
trainings, the report, the teardown), on a preset small enough that the teardown is most of the run. A run
counts as failed when torchrun's exit status is not 0, when any output shows ``terminate called`` or a fatal
signal, or when ``end_distributed`` warns that gloo/NCCL threads outlived the process group (the condition
under which the abort can happen at all; it is checked every run, so the stress does not depend on hitting
the race). Exit status: 0 when no run failed.

It is a script, not a unit test: 50 runs take minutes. It lives in ``.ci/`` beside the other checks CI may run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAILURE_MARKS = (
    "terminate called",
    "Fatal Python error",
    "Segmentation fault",
    "Aborted",
    "SIGABRT",
    "communication threads outlived",
)


def tiny_preset(path: str, threads_per_rank: int) -> None:
    """tiny_cpu with the work cut down to a couple of steps of a tiny model (every knob stays documented)."""
    with open(os.path.join(REPO, "nzdist", "configs", "tiny_cpu.json")) as f:  # the checkout under test
        preset = json.load(f)
    preset.update(
        name="teardown_stress",
        d_model=32,
        n_layer=1,
        n_head=2,
        seq_len=16,
        batch=2,
        steps=2,
        warmup_steps=1,
        data_bytes=8192,
        chunk_elems=1024,
        threads_per_rank=threads_per_rank,
    )
    with open(path, "w") as f:
        json.dump(preset, f, indent=1)


def one_run(preset: str, out: str, env: dict, timeout: float) -> tuple[int, str]:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "nzdist.launch.compare",
        "--preset",
        preset,
        "--out",
        out,
    ]
    try:
        p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
        return p.returncode, p.stdout
    except subprocess.TimeoutExpired as e:
        return -999, (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument(
        "--threads-per-rank",
        type=int,
        default=4,
        help="torch and codec threads per rank (default 4: as on a many-core machine, so OpenMP and "
        "nzdist's codec threads exist at exit even on a 2-core box)",
    )
    ap.add_argument("--timeout", type=float, default=600, help="seconds per run before it counts as hung")
    ap.add_argument("--keep", default=None, help="directory for the logs of failed runs (default: not kept)")
    args = ap.parse_args(argv)

    env = dict(os.environ, PYTHONFAULTHANDLER="1")
    env["PYTHONPATH"] = os.pathsep.join(x for x in (REPO, env.get("PYTHONPATH")) if x)
    failed = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="nzdist-teardown-") as tmp:
        preset = os.path.join(tmp, "teardown_stress.json")
        tiny_preset(preset, args.threads_per_rank)
        for i in range(1, args.runs + 1):
            t = time.perf_counter()
            rc, log = one_run(preset, os.path.join(tmp, "out"), env, args.timeout)
            marks = [m for m in FAILURE_MARKS if m in log]
            ok = rc == 0 and not marks
            print(
                f"run {i:3d}/{args.runs}: {'ok' if ok else 'FAILED'} rc={rc} {time.perf_counter() - t:5.1f}s"
                + (f" {marks}" if marks else ""),
                flush=True,
            )
            if not ok:
                failed.append(i)
                if args.keep:
                    os.makedirs(args.keep, exist_ok=True)
                    with open(os.path.join(args.keep, f"run{i}.log"), "w") as f:
                        f.write(log)
    wall = time.perf_counter() - t0
    print(
        f"{args.runs} runs, {len(failed)} failed{' ' + str(failed) if failed else ''}, "
        f"threads_per_rank={args.threads_per_rank}, wall {wall:.0f} s ({wall / max(args.runs, 1):.1f} s a run)"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
