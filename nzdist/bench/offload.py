"""``nzdist bench offload``: FSDP2 with ``CPUOffloadPolicy``, plain against nzdist, same model, data and seed.

Both runs keep the sharded parameters, the gradients and the optimizer step on the host. Reported per mode and
as nzdist/plain ratios: host bytes of the parameters and of the optimizer state (fp32 AdamW moments; with
``--mixed-precision`` also an fp32 master under a bf16 MixedPrecisionPolicy), host -> device bytes per step,
step time, and whether every loss is bit-identical; the host bytes per step go to a PNG, to show how they move
as training goes on.

    nzdist bench offload                          # real MiniLM weights (bf16), 2 ranks, 50 steps
    nzdist bench offload --mixed-precision        # fp32 master + Adam state on the host
    nzdist bench offload --device cuda --nproc 8  # where host -> device copies exist: PCIe-bound step time
    nzdist bench offload --engine deepspeed       # ZeRO-Offload instead (nzdist bench deepspeed --offload)

Without a GPU the compute device is the host itself, so nothing crosses host -> device in either mode: that
column then reads 0 for both and only a GPU run measures it (and the step time that depends on it).
"""

from __future__ import annotations

import statistics
import sys

from . import fsdp
from .common import save_host_plot


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = fsdp._parser()  # bench fsdp's flags, with offload, compressed optimizer state and 50 steps
    parser.prog = "nzdist bench offload"
    parser.description = __doc__
    parser.set_defaults(steps=50, offload=True, compress_state=True)
    parser.add_argument(
        "--engine",
        choices=("fsdp", "deepspeed"),
        default="fsdp",
        help="deepspeed: ZeRO-3 offload_param + offload_optimizer to cpu on MiniLM's weights, dense vs nzdist "
        "(compress_at_rest + compress_optimizer_state); takes --nproc, --steps, --warmup, --out",
    )
    args = parser.parse_args(argv)
    if args.engine == "deepspeed":
        from . import deepspeed

        return deepspeed.main(
            [
                "--offload",
                "--weights",
                "minilm",
                "--layers",
                "6",
                "--nproc",
                str(args.nproc),
                "--steps",
                str(args.steps),
            ]
            + ["--warmup", str(args.warmup), "--out", args.out_dir]
        )
    if args.mixed_precision and args.mp_storage == "both":
        args.mp_storage = "remainder"
    runs = fsdp.launch(args)
    rows = [_row(mode, ranks) for mode, ranks in runs.items()]
    plain = rows[0]
    for nz in rows[1:]:
        ratio = {"mode": f"{nz['mode']}/plain"}
        for key in ("host_param_bytes", "host_optim_bytes", "h2d_bytes_per_step", "step_s"):
            ratio[key] = nz[key] / plain[key] if plain[key] else float("nan")
        same = all(a["losses"] == b["losses"] for a, b in zip(runs["plain"], runs[nz["mode"]]))
        ratio["losses_bit_identical"] = same
        rows.append(ratio)
    columns = ["mode", "host_param_bytes", "host_optim_bytes", "h2d_bytes_per_step", "step_s", "losses_bit_identical"]
    path = fsdp.report_runs(
        "offload",
        rows,
        columns,
        args,
        runs,
        "host bytes: nzdist.memory_report host_* fields after the last step (rank mean); "
        "h2d: nzdist.comm_stats h2d_bytes per timed step (plain: the same copies, dense); step_s: median",
    )
    _plot(runs, path.with_suffix(".png"))
    return 0 if all(r.get("losses_bit_identical", True) for r in rows) else 1


def _row(mode: str, ranks: list[dict]) -> dict:
    last = [r["host_per_step"][-1] for r in ranks]
    mean = lambda key: statistics.fmean(x[key] for x in last)  # noqa: E731
    nz = mode != "plain"
    h2d = statistics.fmean(r["h2d_bytes_per_step" if nz else "h2d_dense_bytes_per_step"] for r in ranks)
    return {
        "mode": mode,
        "host_param_bytes": mean("host_param_bytes"),
        "host_optim_bytes": mean("host_optim_bytes"),
        "h2d_bytes_per_step": h2d,
        "step_s": statistics.median(s for r in ranks for s in r["step_s"]),
    }


def _plot(runs: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for mode, ranks in runs.items():
        series = ranks[0]["host_per_step"]
        steps = range(1, len(series) + 1)
        ax.plot(steps, [s["host_param_bytes"] / 2**20 for s in series], label=f"{mode}: parameters")
        ax.plot(steps, [s["host_optim_bytes"] / 2**20 for s in series], "--", label=f"{mode}: optimizer state")
    save_host_plot(fig, ax, "FSDP2 CPUOffloadPolicy: host memory, plain vs nzdist", path)
