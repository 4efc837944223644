"""The ``asqhw`` command: one entry point, one subcommand per job.

Each package that owns subcommands exposes ``register(subparsers)`` in its ``cli`` module; a
subcommand's handler takes the parsed arguments and returns the process exit status.
"""

import argparse
import importlib
import sys

from asqhw import __version__
from asqhw.errors import UserError

# Modules whose register(subparsers) adds subcommands, in the order `asqhw --help` lists them.
COMMAND_MODULES = (
    "asqhw.doctor",
    "quant.cli",
    "quant.export.cli",
    "hw.cli",
    "hw.synth_cli",
    "studies.cli",
    "sim.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="asqhw",
        description="Train ASQ/POST-quantized networks and generate verified hardware from them.",
    )
    parser.add_argument("--version", action="version", version=f"asqhw {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except UserError as err:
        print(f"asqhw: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("asqhw: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
