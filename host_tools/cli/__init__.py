"""``insole``: the command-line front of the open smart insole.

Each sub-command lives in its own module ``host_tools/cli/<name>.py`` which provides
``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``. Heavy imports
(bumble, bleak, matplotlib) stay inside ``run`` so that ``insole --help`` is instant.

Errors are handled here for every command: a UsageError, an argument error, or an
OSError nobody expected (a full disk, a read-only file system) is one line on stderr
and exit status 2; Ctrl-C is 130. When the reader of standard output goes away
(``insole history | head``) the command finishes quietly (host_tools/common/safeio.py).
"""

from __future__ import annotations

import argparse
import importlib
import sqlite3
import sys
from importlib import metadata

from host_tools.common import safeio
from host_tools.common.argcheck import Parser, parse
from host_tools.common.safeio import UsageError

# (command name, module) in the order --help lists them.
COMMANDS = [
    ("detect", "host_tools.cli.detect"),
    ("evaluate", "host_tools.cli.evaluate"),
    ("bench", "host_tools.cli.bench"),
    ("sim", "host_tools.cli.sim"),
    ("scan", "host_tools.cli.scan"),
    ("pair", "host_tools.cli.pair"),
    ("config", "host_tools.cli.config"),
    ("capture", "host_tools.cli.capture"),
    ("report", "host_tools.cli.report"),
    ("build", "host_tools.cli.build"),
    ("flash", "host_tools.cli.flash"),
    ("train", "host_tools.cli.train"),
    ("history", "host_tools.cli.history"),
]


__all__ = ["COMMANDS", "UsageError", "build_parser", "main", "version"]


def version() -> str:
    """The installed package's version (pyproject.toml)."""
    try:
        return metadata.version("insole")
    except metadata.PackageNotFoundError:
        return "unknown (not installed: pip install -e .)"


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="insole",
        description="Tools for the open smart insole: detect steps in traces, run the "
        "virtual insole, capture its BLE log, report and train.",
    )
    parser.add_argument("--version", action="version", version=f"insole {version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, module_name in COMMANDS:
        module = importlib.import_module(module_name)
        p = sub.add_parser(
            name,
            help=module.HELP,
            description=(module.__doc__ or module.HELP).strip(),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parse(build_parser(), argv)
    if args is None:
        return 2
    with safeio.guarded_stdout():
        try:
            status = int(args._run(args) or 0)
            sys.stdout.flush()  # a full disk behind '> file' shows here
            return status
        except UsageError as exc:
            message = str(exc)
        except sqlite3.Error as exc:  # the history database: locked, full, read-only
            message = f"history database: {exc}"
        except OSError as exc:
            message = safeio.describe(exc)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
    print(f"insole {args.command}: error: {message}", file=sys.stderr)
    return 2

