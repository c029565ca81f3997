"""Files and streams for every ``insole`` command: atomic writes and one-line errors.

Every file a command writes goes through :func:`write_bytes` (or :func:`write_text`,
:func:`atomic_file`): the data goes to a temporary file in the same directory, is
flushed to the disk, and only then replaces the target. A failure at any point (a full
disk, a read-only file system, Ctrl-C) removes the temporary file, so the target is
either the old file or the new one, never empty or half written.

:func:`output_file` and :func:`output_dir` check a destination before a command starts
its work (a directory where a file is wanted, a file where a directory is wanted, a
file system that cannot be written), so a long capture or evaluation does not fail at
the end. Missing parent directories are created.

:func:`describe` turns an ``OSError`` into one line: what, where, what to do.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path


class UsageError(Exception):
    """Bad input from the user: printed as one line without a traceback, exit status 2."""


# errno -> (what went wrong, what to do)
_PROBLEMS = {
    errno.ENOSPC: ("no space left on the device", "free some space or write elsewhere"),
    errno.EDQUOT: ("disk quota exceeded", "free some space or write elsewhere"),
    errno.EROFS: ("read-only file system", "choose a place that can be written"),
    errno.EACCES: ("permission denied", "choose a place you may write to"),
    errno.EPERM: ("operation not permitted", "choose a place you may write to"),
    errno.EISDIR: ("is a directory", "give a file name"),
    errno.ENOTDIR: ("part of the path is a file, not a directory", "check the path"),
    errno.ENOENT: ("no such file or directory", "check the path"),
    errno.EEXIST: ("already exists", "choose another name"),
    errno.ENAMETOOLONG: ("file name too long", "choose a shorter name"),
    errno.EIO: ("input/output error", "check the disk"),
    errno.EPIPE: ("the reader went away", "keep the reading side open"),
}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give a new file


def describe(exc: OSError, path: str | Path | None = None, option: str | None = None) -> str:
    """One line for an OSError: '[OPTION ]PATH: what went wrong; what to do'."""
    where = str(path) if path is not None else (exc.filename or "")
    if option:
        where = f"{option} {where}".strip()
    problem, advice = _PROBLEMS.get(exc.errno or 0, (exc.strerror or str(exc), ""))
    line = f"{where}: {problem}" if where else problem
    return f"{line}; {advice}" if advice else line


def _first_file_ancestor(path: Path) -> Path | None:
    """The first component of ``path`` that exists and is not a directory."""
    for part in reversed((path, *path.parents)):
        if part.exists() and not part.is_dir():
            return part
    return None


def _probe(directory: Path, option: str | None, shown: Path) -> None:
    """Create and remove a file in ``directory``: the real test of 'can be written'."""
    try:
        fd, name = tempfile.mkstemp(dir=directory, prefix=".insole-probe-")
    except OSError as exc:
        raise UsageError(describe(exc, shown, option)) from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(name)


def ensure_dir(path: str | Path, option: str | None = None,
               shown: str | Path | None = None) -> Path:
    """Create ``path`` and its parents if missing; a one-line UsageError if impossible
    (naming ``shown``, the path the user gave, when that is a file inside ``path``)."""
    p = Path(path)
    if p.is_dir():
        return p
    given = Path(shown) if shown is not None else p
    where = f"{option} {given}" if option else str(given)
    blocker = _first_file_ancestor(p)
    if blocker is not None:
        what = "is a file" if blocker == given else f"{blocker} is a file"
        wanted = "a directory (it is created if missing)" if given == p else "another path"
        raise UsageError(f"{where}: {what}, not a directory; give {wanted}")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(describe(exc, given, option)) from None
    return p


def output_dir(path: str | Path, option: str | None = None) -> Path:
    """A directory that files will be written into: created if missing, and writable."""
    p = ensure_dir(path, option)
    _probe(p, option, p)
    return p


def output_file(path: str | Path, option: str | None = None, example: str = "") -> Path:
    """A file that will be written: not a directory, its directory created and writable."""
    p = Path(path)
    where = f"{option} {p}" if option else str(p)
    if p.is_dir():
        hint = f", e.g. {p / example}" if example else ""
        raise UsageError(f"{where}: is a directory; give a file name{hint}")
    if str(p).endswith(os.sep):
        raise UsageError(f"{where}: ends in '{os.sep}'; give a file name")
    ensure_dir(p.parent, option, shown=p)
    _probe(p.parent, option, p)
    return p


def write_bytes(path: str | Path, data: bytes, option: str | None = None) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file, fsync, rename).

    On failure the temporary file is removed and the old ``path``, if any, is left as
    it was; the error is a UsageError naming ``path``."""
    p = Path(path)
    if p.is_dir():
        raise UsageError(f"{option + ' ' if option else ''}{p}: is a directory; "
                         "give a file name")
    try:
        fd, tmp = tempfile.mkstemp(dir=p.parent or ".", prefix=f".{p.name}.", suffix=".tmp")
    except OSError as exc:
        raise UsageError(describe(exc, p, option)) from None
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, p)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            kept = " (the old file is unchanged)" if p.exists() else ""
            raise UsageError(describe(exc, p, option) + kept) from None
        raise
    _sync_dir(p.parent)
    return p


def write_text(path: str | Path, text: str, option: str | None = None) -> Path:
    return write_bytes(path, text.encode("utf-8"), option)


def _sync_dir(directory: Path) -> None:
    # makes the rename itself durable; not every file system lets a directory be synced
    with contextlib.suppress(OSError):
        fd = os.open(directory or ".", os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_file(path: str | Path, binary: bool = False,
                option: str | None = None) -> Iterator[io.StringIO | io.BytesIO]:
    """A buffer whose contents replace ``path`` atomically when the block ends
    without an exception (nothing is written otherwise)."""
    buf: io.StringIO | io.BytesIO = io.BytesIO() if binary else io.StringIO(newline="")
    yield buf
    data = buf.getvalue()
    write_bytes(path, data if isinstance(data, bytes) else data.encode("utf-8"), option)


def save_figure(fig, path: str | Path, dpi: int = 110) -> Path:
    """A matplotlib figure as a PNG, written atomically."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return write_bytes(path, buf.getvalue())


# ----------------------------------------------------------------------------- stdout


STDOUT = "standard output"


class PipeSafeStdout(io.TextIOBase):
    """Standard output that survives its reader going away (``insole ... | head``).

    Once a write or flush meets a closed pipe, file descriptor 1 is pointed at
    /dev/null and every later write is dropped, so the command finishes its work
    (files written, sessions saved) quietly instead of dying with a traceback. Any
    other failure (``> /dev/full``) is an OSError naming standard output."""

    def __init__(self, stream):
        super().__init__()
        self._stream = stream
        self.broken = False

    def _redirect(self) -> None:
        self.broken = True
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)

    def write(self, text: str) -> int:
        if not self.broken:
            try:
                return self._stream.write(text)
            except BrokenPipeError:
                self._redirect()
            except OSError as exc:
                raise OSError(exc.errno, exc.strerror, STDOUT) from None
        return len(text)

    def flush(self) -> None:
        if not self.broken:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._redirect()
            except OSError as exc:
                raise OSError(exc.errno, exc.strerror, STDOUT) from None

    def isatty(self) -> bool:
        return not self.broken and self._stream.isatty()

    def fileno(self) -> int:
        return self._stream.fileno()

    def writable(self) -> bool:
        return True

    @property
    def encoding(self):  # type: ignore[override]
        return self._stream.encoding

    def __getattr__(self, name):
        return getattr(self._stream, name)


@contextlib.contextmanager
def guarded_stdout() -> Iterator[PipeSafeStdout | None]:
    """Wrap the process's real stdout in a PipeSafeStdout for the duration (left
    alone when something else, such as a test's capture, has replaced it)."""
    if sys.stdout is not sys.__stdout__ or sys.stdout is None:
        yield None
        return
    original = sys.stdout
    guard = PipeSafeStdout(original)
    sys.stdout = guard
    try:
        yield guard
    finally:
        sys.stdout = original
        if not guard.broken:
            try:
                original.flush()
            except OSError:
                # already reported, or nothing more can be said: drop what is buffered
                # so the interpreter's own flush at exit prints no traceback
                guard._redirect()
