"""The `fedkeys` command: one subcommand per stage, plus `demo` that runs them all.

Every subcommand takes --preset, --out and repeated --set SECTION.FIELD=VALUE overrides, and
writes its resolved config.json and a summary.json into --out.
"""

from __future__ import annotations

import argparse
import os
import sys

from fedkeys.commands import audit, data, demo, devices, evaluate, export, report, serve, suggest, train, tune, worker

COMMANDS = {"data": data, "train": train, "export": export, "serve": serve,
            "devices": devices, "evaluate": evaluate, "demo": demo, "report": report, "tune": tune,
            "suggest": suggest, "audit": audit, "worker": worker}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedkeys", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in COMMANDS.items():
        p = sub.add_parser(name, help=module.__doc__.splitlines()[0], description=module.__doc__)
        p.add_argument("--preset", default="default", help="tiny (tests), default (demo), gboard, or a .json preset file (fedkeys tune)")
        p.add_argument("--out", required=name not in ("serve", "report", "train", "suggest", "worker"), help="output directory")
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                       help="override a config field, e.g. --set train.rounds=5 (repeatable)")
        module.add_arguments(p)
        p.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"fedkeys {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
