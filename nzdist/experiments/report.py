"""The main job's report: per-rank records of both runs -> one results dict, a text report, JSON and a PNG.

Pure functions over plain dicts (no torch.distributed), so the report can be rebuilt from a saved JSON:

    results = build_results(preset, env, ranks)     # ranks[r] = {"fsdp2": record, "nzdist": record}
    paths = save(results, "out")                     # out/report.json, out/report.png
    print(format_report(results, paths))
"""

from __future__ import annotations

import json
import math
import os
import statistics

BASELINE, CANDIDATE = "fsdp2", "nzdist"


def _median_step(ranks: list[dict], warmup: int) -> float:
    """Median over steps of the slowest rank's time (a synchronous step lasts as long as its slowest rank)."""
    n = len(ranks[0]["step_times"])
    skip = warmup if warmup < n else 0
    per_step = [max(r["step_times"][i] for r in ranks) for i in range(skip, n)]
    return statistics.median(per_step) if per_step else math.nan


def _ratio(a: float, b: float) -> float:
    return a / b if b else math.nan


def build_results(preset: dict, env: dict, ranks: list[dict]) -> dict:
    """``ranks[r][run]`` is rank r's record of that run (losses, loss_hex, step_times, memory, comm_stats, wire)."""
    world = len(ranks)
    runs = {run: [ranks[r][run] for r in range(world)] for run in (BASELINE, CANDIDATE)}
    mismatches = []  # (rank, step, baseline, candidate) of every loss that differs in any bit
    for r in range(world):
        a, b = runs[BASELINE][r]["loss_hex"], runs[CANDIDATE][r]["loss_hex"]
        if len(a) != len(b):
            mismatches.append((r, None, len(a), len(b)))
        mismatches += [(r, i, x, y) for i, (x, y) in enumerate(zip(a, b)) if x != y]
    params_differ = {r: runs[CANDIDATE][r].get("params_differ", []) for r in range(world)}
    params_same = not any(params_differ.values())
    summary = {}
    for run, recs in runs.items():
        steps = len(recs[0]["losses"])
        summary[run] = {
            "loss_mean": [sum(rec["losses"][i] for rec in recs) / world for i in range(steps)],
            "median_step_s": _median_step(recs, preset.get("warmup_steps", 0)),
            "wall_s": max(rec["wall_s"] for rec in recs),
            "param_bytes": [rec["memory"]["param_bytes"] for rec in recs],
            "state_bytes": [rec["memory"]["state_bytes"] for rec in recs],
            "wire_bytes": [rec["wire"]["bytes"] for rec in recs],
            "spill_bytes": [rec["wire"].get("broadcast_bytes", 0) for rec in recs],
            "spills": [rec["wire"].get("broadcasts", 0) for rec in recs],
            "all_gathers": [rec["wire"]["all_gathers"] for rec in recs],
            "peak_device_bytes": [rec.get("peak_device_bytes") for rec in recs],
            "bits_per_param": _ratio(
                8 * sum(rec["memory"]["param_bytes"] for rec in recs),
                sum(rec["memory"].get("param_numel", 0) for rec in recs),
            ),
        }
    base, cand = summary[BASELINE], summary[CANDIDATE]
    comm = [rec["comm_stats"] for rec in runs[CANDIDATE]]
    ratios = {  # nzdist / plain FSDP2, summed over ranks; < 1 means nzdist holds or sends less
        "param_bytes": _ratio(sum(cand["param_bytes"]), sum(base["param_bytes"])),
        "state_bytes": _ratio(sum(cand["state_bytes"]), sum(base["state_bytes"])),
        "all_gather_wire_bytes": _ratio(sum(cand["wire_bytes"]), sum(base["wire_bytes"])),
        "all_gather_plus_spill_bytes": _ratio(
            sum(cand["wire_bytes"]) + sum(cand["spill_bytes"]), sum(base["wire_bytes"]) + sum(base["spill_bytes"])
        ),
        "all_gather_payload_vs_dense": _ratio(
            sum(c["payload_bytes"] for c in comm), sum(c["dense_bytes"] for c in comm)
        ),
        "median_step_time": _ratio(cand["median_step_s"], base["median_step_s"]),
    }
    return {
        "preset": preset,
        "env": env,
        "runs": runs,
        "summary": summary,
        "ratios": ratios,
        "identical": {
            "losses": not mismatches,
            "params": params_same,
            "all": not mismatches and params_same,
            "loss_mismatches": mismatches[:20],
            "params_differ": params_differ,
        },
    }


def save(results: dict, out_dir: str) -> dict:
    os.makedirs(out_dir, exist_ok=True)
    paths = {"json": os.path.join(out_dir, "report.json"), "png": os.path.join(out_dir, "report.png")}
    with open(paths["json"], "w") as f:
        json.dump(_json_safe(results), f, indent=1, allow_nan=False)
    plot(results, paths["png"])
    return paths


def _json_safe(x):
    """NaN (a ratio with nothing to compare) -> null: strict JSON readers reject NaN."""
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x


def _num(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:.4f}"  # n/a: nothing to compare (e.g. one rank: no all-gather)


def _mib(n: float) -> str:
    return f"{n / 2**20:10.3f} MiB"


def format_report(results: dict, paths: dict | None = None) -> str:
    p, env, s = results["preset"], results["env"], results["summary"]
    ratios, same = results["ratios"], results["identical"]
    base, cand = s[BASELINE], s[CANDIDATE]
    world = env["world_size"]
    lines = [
        f"nzdist main job -- preset {p['name']}: {world} rank(s), {env['device']}/{env['backend']}, "
        f"torch {env['torch']}" + (f", {env['gpu']}" if env.get("gpu") else ""),
        f"  model d_model={p['d_model']} layers={p['n_layer']} heads={p['n_head']} seq={p['seq_len']} {p['dtype']}; "
        f"{p['steps']} steps x {p['batch']} seqs/rank; runs: plain torch FSDP2 fully_shard, then nzdist.fsdp "
        f"(lossless, chunk {p['chunk_elems']}, "
        f"optimizer state {'compressed' if p['compress_optimizer_state'] else 'dense'})",
        "",
        "loss per step (mean over ranks)",
        f"  {'step':>5} {BASELINE:>12} {CANDIDATE:>12}",
    ]
    n = len(base["loss_mean"])
    shown = range(n) if n <= 40 else sorted({*range(5), *range(0, n, max(1, n // 20)), n - 1})
    for i in shown:
        lines.append(f"  {i + 1:>5} {base['loss_mean'][i]:12.6f} {cand['loss_mean'][i]:12.6f}")
    lines.append("")
    if same["losses"]:
        lines.append(f"losses: IDENTICAL in every bit on every rank ({world} ranks x {n} steps)")
    else:
        first = same["loss_mismatches"][0]
        lines.append(
            f"losses: DIFFER -- {len(same['loss_mismatches'])}+ mismatches, first on rank {first[0]} step "
            f"{first[1]}: {first[2]} vs {first[3]}"
        )
    if same["params"]:
        lines.append("final parameters: IDENTICAL in every bit on every rank")
    else:
        bad = {r: v for r, v in same["params_differ"].items() if v}
        lines.append(f"final parameters: DIFFER -- {bad}")
    lines += ["", f"per rank{'':20} {BASELINE:>14} {CANDIDATE:>14}   {CANDIDATE}/{BASELINE}"]
    rows = [
        ("parameters resident", "param_bytes"),
        ("optimizer state", "state_bytes"),
        ("all-gather bytes sent", "wire_bytes"),
    ]
    spilled = any(base["spills"]) or any(cand["spills"])
    if spilled:  # shards that outgrew their all-gather capacity travelled raw by broadcast
        rows.append(("spill broadcast bytes", "spill_bytes"))
    if any(v is not None for v in base["peak_device_bytes"]):
        rows.append(("peak device memory", "peak_device_bytes"))
    for r in range(world):
        for label, key in rows:
            a, b = base[key][r], cand[key][r]
            lines.append(f"  rank {r} {label:<20} {_mib(a)} {_mib(b)}   {f'{_ratio(b, a):8.4f}' if a else '       -'}")
    for r in range(world):
        lines.append(f"  rank {r} {'all-gathers':<20} {base['all_gathers'][r]:14d} {cand['all_gathers'][r]:14d}")
        if spilled:
            lines.append(f"  rank {r} {'spill broadcasts':<20} {base['spills'][r]:14d} {cand['spills'][r]:14d}")
    lines += [
        f"  {'median step time':<27} {base['median_step_s'] * 1e3:11.1f} ms {cand['median_step_s'] * 1e3:11.1f} ms"
        f"   {ratios['median_step_time']:8.4f}",
        f"  {'wall time of the run':<27} {base['wall_s']:12.1f} s {cand['wall_s']:12.1f} s",
        "",
        "ratios nzdist/plain over all ranks (< 1: nzdist holds or sends less): "
        f"parameters {_num(ratios['param_bytes'])}, optimizer state {_num(ratios['state_bytes'])}, "
        f"all-gather bytes {_num(ratios['all_gather_wire_bytes'])} "
        + (f"(with spill broadcasts {_num(ratios['all_gather_plus_spill_bytes'])}) " if spilled else "")
        + f"(nzdist.comm_stats payload/dense {_num(ratios['all_gather_payload_vs_dense'])}), "
        f"step time {ratios['median_step_time']:.3f}x",
        f"  resident parameters: {base['bits_per_param']:.2f} -> {cand['bits_per_param']:.2f} bits/parameter "
        f"(random-init weights after {n} steps, not a trained model; the all-gather payload also carries each "
        f"shard's capacity headroom{', and spilled shards travelled raw' if spilled else ''})",
    ]
    if paths:
        lines.append(f"saved {paths['json']} and {paths['png']}")
    return "\n".join(lines)


def plot(results: dict, path: str) -> None:
    """Loss curves of both runs, and per-rank bars of resident parameter / optimizer bytes and all-gather bytes."""
    import matplotlib

    matplotlib.use("Agg")  # headless: ranks run without a display
    import matplotlib.pyplot as plt

    s, world = results["summary"], results["env"]["world_size"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    ax = axes[0]
    steps = range(1, len(s[BASELINE]["loss_mean"]) + 1)
    ax.plot(steps, s[BASELINE]["loss_mean"], lw=3, alpha=0.5, label="plain FSDP2")
    ax.plot(steps, s[CANDIDATE]["loss_mean"], "k--", marker=".", lw=1, label="nzdist")
    ax.set(
        xlabel="step",
        ylabel="loss (mean over ranks)",
        title="loss: " + ("identical bits" if results["identical"]["losses"] else "DIFFERS"),
    )
    ax.legend()
    width = 0.38
    for ax, keys, title in (
        (axes[1], ("param_bytes", "state_bytes"), "resident bytes per rank"),
        (axes[2], ("wire_bytes",), "all-gather bytes sent per rank"),
    ):
        labels, xs = [], 0
        for key in keys:
            for r in range(world):
                a, b = s[BASELINE][key][r] / 2**20, s[CANDIDATE][key][r] / 2**20
                ax.bar(xs - width / 2, a, width, color="C0", label="plain FSDP2" if xs == 0 else None)
                ax.bar(xs + width / 2, b, width, color="C1", label="nzdist" if xs == 0 else None)
                top = b
                if key == "wire_bytes" and s[CANDIDATE]["spill_bytes"][r]:  # raw re-sends of outgrown shards
                    spill = s[CANDIDATE]["spill_bytes"][r] / 2**20
                    ax.bar(
                        xs + width / 2,
                        spill,
                        width,
                        bottom=b,
                        color="C3",
                        hatch="//",
                        label="nzdist spill broadcasts" if r == 0 else None,
                    )
                    top = b + spill
                ax.text(xs + width / 2, top, f"{_ratio(top, a):.2f}x", ha="center", va="bottom", fontsize=8)
                labels.append(
                    f"{'params' if key == 'param_bytes' else 'optim' if key == 'state_bytes' else 'rank'} r{r}"
                )
                xs += 1
        ax.set_xticks(range(len(labels)), labels, rotation=30 if len(labels) > 4 else 0)
        ax.set(ylabel="MiB", title=title)
        ax.set_ylim(top=ax.get_ylim()[1] * 1.3)  # room for the legend and the ratio labels
        ax.legend(fontsize=8, loc="upper left")
    p, env = results["preset"], results["env"]
    fig.suptitle(f"nzdist vs plain FSDP2 -- {p['name']}, {world} ranks, {env['device']}/{env['backend']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
