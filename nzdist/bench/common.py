"""What every ``nzdist bench`` shares: a table on stdout and the same rows as JSON on disk."""

from __future__ import annotations

import datetime
import json
import os
import platform
from pathlib import Path


def environment() -> dict:
    import torch

    env = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name()
    return env


def format_table(rows: list[dict], columns: list[str]) -> str:
    def cell(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    cells = [[cell(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c) for i, c in enumerate(columns)]
    line = "  ".join(c.ljust(w) for c, w in zip(columns, widths))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(row, widths))) for row in cells]
    return "\n".join(out)


def report(
    name: str,
    rows: list[dict],
    columns: list[str],
    out_dir: str | os.PathLike = "bench_results",
    extra: dict | None = None,
) -> Path:
    """Print ``rows`` as a table and write ``{out_dir}/{name}.json``; returns the JSON path."""
    print(format_table(rows, columns), flush=True)
    path = Path(out_dir) / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps({"bench": name, "environment": environment(), "rows": rows, **(extra or {})}, indent=2, default=str)
    )
    print(f"wrote {path}")
    return path


def save_host_plot(fig, ax, title: str, path) -> None:
    """Finish and write a host-bytes-per-step figure (the offload benches: rank 0's MiB after every step)."""
    import matplotlib.pyplot as plt

    ax.set_xlabel("step")
    ax.set_ylabel("host MiB (rank 0)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"wrote {path}")
