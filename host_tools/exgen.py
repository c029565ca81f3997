"""``python -m host_tools.exgen``: the exercise trace generator
(host_tools/training/exgen.py)."""

import sys

from host_tools.training.exgen import run

if __name__ == "__main__":
    sys.exit(run())
