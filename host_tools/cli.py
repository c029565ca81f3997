"""``insole``: the command-line front of the open smart insole.

Each sub-command lives in its own module ``host_tools/cmd_<name>.py`` which provides
``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``. Heavy imports
(bumble, bleak, matplotlib) stay inside ``run`` so that ``insole --help`` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# (command name, module) in the order --help lists them.
COMMANDS = [
    ("detect", "host_tools.cmd_detect"),
    ("evaluate", "host_tools.cmd_evaluate"),
    ("bench", "host_tools.cmd_bench"),
    ("sim", "host_tools.cmd_sim"),
    ("scan", "host_tools.cmd_scan"),
    ("capture", "host_tools.cmd_capture"),
    ("report", "host_tools.cmd_report"),
    ("build", "host_tools.cmd_build"),
    ("flash", "host_tools.cmd_flash"),
    ("train", "host_tools.cmd_train"),
    ("history", "host_tools.cmd_history"),
]


class UsageError(Exception):
    """Bad input from the user: printed without a traceback, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="insole",
        description="Tools for the open smart insole: detect steps in traces, run the "
        "virtual insole, capture its BLE log, report and train.",
    )
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
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except UsageError as exc:
        print(f"insole {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
