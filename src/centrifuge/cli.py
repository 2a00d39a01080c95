"""The ``centrifuge`` command. Each subcommand lives in ``centrifuge.commands.<name>`` and defines
``add_command(subparsers)``, which registers its parser with ``func`` set to the function to run."""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
from typing import NoReturn

from . import __version__, commands
from .errors import USER_ERRORS, error_line

ORDER = ["demo", "separate", "app", "train", "evaluate", "experiment", "bench", "prepare"]


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad command line gets one line (and exit status 2), like every other user error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="centrifuge",
        description="Separate videos into layers (The Visual Centrifuge, Alayrac et al., CVPR 2019).")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    names = [m.name for m in pkgutil.iter_modules(commands.__path__) if not m.name.startswith("_")]
    for name in sorted(names, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n)):
        importlib.import_module(f"{commands.__name__}.{name}").add_command(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # a bad command line (one line printed), --help or --version
        return e.code if isinstance(e.code, int) else 2
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as e:
        if args.verbose:
            raise
        print(f"centrifuge: error: {error_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("centrifuge: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
