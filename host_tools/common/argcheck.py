"""Command-line numbers, checked the same way in every command.

Each function is an argparse ``type=``: it turns the text into a value or raises
``argparse.ArgumentTypeError`` with what is allowed, so ``--rate``, ``--speed``,
``--duration`` and friends accept and refuse the same things in ``detect``, ``sim``,
``capture``, ``train`` and ``exgen``. NaN and infinity are refused everywhere.
:class:`Parser` prints an argument error as one line.
"""

from __future__ import annotations

import argparse
import math
import sys

MIN_RATE_HZ = 50  # the rates the step detector (firmware/gait.py) is built for
MAX_RATE_HZ = 1000
MAX_SPEED = 1000.0  # trace seconds per wall second
MAX_SECONDS = 7 * 24 * 3600.0
TARGETS = {
    # exercise: (unit, whole number?, low, high)
    "heel-raises": ("reps", True, 1, 1000),
    "toe-scrunch": ("scrunches", True, 1, 1000),
    "balance": ("seconds of single-leg stance", False, 1, 3600),
    "slow-walk": ("steps/min (a cadence)", False, 20, 160),
}


class ArgumentsError(Exception):
    """A command line argparse refused: one line for stderr, exit status 2."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line naming the command and its --help,
    raised as ArgumentsError so that ``main()`` can return 2 instead of exiting."""

    def error(self, message: str):  # type: ignore[override]
        raise ArgumentsError(f"{self.prog}: error: {message} (see {self.prog} --help)")


def parse(parser: argparse.ArgumentParser, argv) -> argparse.Namespace | None:
    """Parsed arguments, or None after printing the one-line error."""
    try:
        return parser.parse_args(argv)
    except ArgumentsError as exc:
        print(exc, file=sys.stderr)
        return None


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def _whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def rate_hz(text: str) -> int:
    """A sample rate: a whole number of Hz within the firmware's range."""
    rate = _whole(text)
    if not MIN_RATE_HZ <= rate <= MAX_RATE_HZ:
        raise argparse.ArgumentTypeError(
            f"sample rate {rate} Hz is outside {MIN_RATE_HZ}..{MAX_RATE_HZ}")
    return rate


def rate_list(text: str) -> tuple[int, ...]:
    """Sample rates, comma-separated, each as :func:`rate_hz` takes it."""
    return tuple(rate_hz(part) for part in text.split(","))


def speed(text: str) -> float:
    """Replay speed: trace seconds per wall second, 0 = as fast as possible."""
    value = _number(text)
    if not 0 <= value <= MAX_SPEED:
        raise argparse.ArgumentTypeError(
            f"speed {text} is outside 0..{MAX_SPEED:g} (1 = real time, 0 = as fast as "
            "possible)")
    return value


def seconds(text: str) -> float:
    """A positive length of time in seconds (--duration, --timeout)."""
    value = _number(text)
    if not 0 < value <= MAX_SECONDS:
        raise argparse.ArgumentTypeError(
            f"{text} s is not a length of time: give more than 0, at most {MAX_SECONDS:g} s")
    return value


def seconds_or_zero(text: str) -> float:
    """A length of time that may be 0 (--linger)."""
    value = _number(text)
    if not 0 <= value <= MAX_SECONDS:
        raise argparse.ArgumentTypeError(f"{text} s is outside 0..{MAX_SECONDS:g} s")
    return value


def int_range(low: int, high: int, what: str):
    """A whole number within low..high."""

    def check(text: str) -> int:
        value = _whole(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{what} {value} is outside {low}..{high}")
        return value

    check.__name__ = what.replace(" ", "_")
    return check


def float_range(low: float, high: float, what: str, low_open: bool = False):
    """A finite number within low..high (above low when low_open)."""

    def check(text: str) -> float:
        value = _number(text)
        if (value <= low if low_open else value < low) or value > high:
            bound = f"above {low:g}" if low_open else f"{low:g}"
            raise argparse.ArgumentTypeError(f"{what} {text} is outside {bound}..{high:g}")
        return value

    check.__name__ = what.replace(" ", "_")
    return check


def positive_number(text: str) -> float:
    """Any finite number above 0 (checked further once its meaning is known)."""
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not above 0")
    return value


def target(exercise: str, value: float) -> float:
    """An exercise's --target, or ValueError saying what that exercise takes."""
    unit, whole, low, high = TARGETS[exercise]
    if whole and value != int(value):
        raise ValueError(f"{exercise} --target is a number of {unit}: a whole number "
                         f"{low}..{high}, not {value:g}")
    if not low <= value <= high:
        raise ValueError(f"{exercise} --target is {unit}: {low}..{high}, not {value:g}")
    return float(int(value)) if whole else value
