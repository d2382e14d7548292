"""The ``nzdist`` command. Subcommands live in their own modules and are imported only when used, so
``nzdist stats`` does not pay for DeepSpeed's import."""

from __future__ import annotations

import argparse
import importlib
import sys

# `nzdist bench NAME` runs nzdist.bench.NAME.main(argv); each module owns its flags.
BENCHES = ("codec", "gpu", "fsdp", "deepspeed", "ckpt", "offload")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="nzdist", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("stats", help="bits/element per codec vs the order-0 entropy bound, per tensor", add_help=False)
    b = sub.add_parser("bench", help="benchmarks: " + ", ".join(BENCHES), add_help=False)
    b.add_argument("name", choices=BENCHES)
    sub.add_parser("ckpt", help="inspect or convert compressed checkpoints", add_help=False)
    sub.add_parser("demo", help="compress -> stats -> bench on real weights", add_help=False)
    sub.add_parser("train", help="the main job: plain FSDP2 vs nzdist, same seed, report + plot", add_help=False)
    args, rest = parser.parse_known_args(argv)
    if args.cmd == "bench":
        module = importlib.import_module(f"nzdist.bench.{args.name}")
    else:
        module = importlib.import_module(
            {
                "stats": "nzdist.cli.stats",
                "ckpt": "nzdist.cli.ckpt",
                "demo": "nzdist.cli.demo",
                "train": "nzdist.launch.main",
            }[args.cmd]
        )
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
