"""Output folders: one writer per folder, and never a deletion of what a run did not write.

Guarantees (docs/run-output.md, "The output folder"):

* **One writer.** A run (``replay``, ``compare``, ``replay --resume``) holds an
  exclusive lock on ``OUT/.matcher.lock`` (``flock``) for its whole life. A
  second run on the same folder refuses at once, with one line naming the
  holder's pid and start time. The kernel releases the lock when its holder
  dies however it dies (``kill -9`` included), so the lock of a dead process is
  stale by construction and the next run takes it over; the file itself stays
  (removing it could let two runs lock two different files).
* **Refuse, do not empty.** An existing, non-empty ``OUT`` is refused
  (:class:`~matcher.errors.UsageError`, exit 2) unless ``overwrite`` is given.
  A folder holding only the lock and the marker (a run that stopped before
  writing anything) counts as empty.
* **Overwrite removes a run whole, and only a run.** With ``overwrite``, ``OUT``
  is emptied only if it is a matcher run folder: it carries the marker
  ``OUT/.matcher-run`` (or, for folders written before the marker existed,
  ``run.json``, ``summary.json``, ``compare.json`` or ``checkpoint.pkl``) and
  holds nothing but what runs write: ``events/``, ``locations/``, ``areas/``, staged parts
  (``.NAME.parts/``), files ending in ``.parquet``, ``.json``, ``.jsonl`` (the
  live service's journal), ``.html`` or ``.pkl``, temporary ``.*.tmp`` files,
  and sub-folders that are runs themselves (the policies of a compare). Anything
  else (``notes.txt``, a folder of your own) refuses the run (UsageError, exit
  2) with one line naming it, and nothing is deleted.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from matcher.errors import MatcherError, UsageError
from matcher.io.atomic import cannot_write, write_json

__all__ = ["LOCK", "MARKER", "Claim", "claim", "is_run_folder", "lock_holder"]

LOCK = ".matcher.lock"
MARKER = ".matcher-run"
_LEGACY_SIGNS = ("run.json", "summary.json", "compare.json", "checkpoint.pkl")
_RUN_FOLDERS = ("events", "locations", "areas")  # areas/: the areas of a split run (sim.areas)
_RUN_SUFFIXES = (".parquet", ".json", ".jsonl", ".html", ".pkl")  # .jsonl: the live journal


@dataclass
class Claim:
    """A held output folder (released by :func:`claim`'s context manager)."""

    out: Path
    fd: int
    took_over: dict | None  # the holder info a dead process left behind, if any


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def lock_holder(out: str | os.PathLike) -> dict:
    """What the lock file says about its (last) holder: pid, started, host (empty if unknown)."""
    try:
        return json.loads((Path(out) / LOCK).read_text() or "{}")
    except (OSError, ValueError):
        return {}


def _holder_text(info: dict) -> str:
    pid = info.get("pid", "?")
    started = info.get("started", "an unknown time")
    host = info.get("host")
    where = f" on {host}" if host and host != socket.gethostname() else ""
    return f"pid {pid}{where}, started {started}"


def _try_lock(out: Path, create: bool) -> int | None:
    """An fd holding the folder's lock, or None if another process holds it."""
    path = out / LOCK
    flags = os.O_RDWR | (os.O_CREAT if create else 0)
    try:
        fd = os.open(path, flags, 0o644)
    except FileNotFoundError:
        if create:
            raise
        return -1  # no lock file: nobody holds it
    except OSError as e:
        raise cannot_write(path, e) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return None
        raise cannot_write(path, e) from None
    return fd


def _write_holder(fd: int) -> None:
    info = {"pid": os.getpid(), "started": _now(), "host": socket.gethostname()}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)


def _in_use(out: Path) -> MatcherError:
    return MatcherError(
        f"{out}: in use by another matcher run ({_holder_text(lock_holder(out))}); "
        "wait for it to end or choose another --out"
    )


def is_run_folder(folder: str | os.PathLike) -> bool:
    """True if ``folder`` carries the marker of a matcher run (or the files of one from before the marker)."""
    p = Path(folder)
    return (p / MARKER).is_file() or any((p / name).is_file() for name in _LEGACY_SIGNS)


def _foreign(folder: Path) -> Path | None:
    """The first entry of a run folder that no run writes (None: all of it is a run's)."""
    if not is_run_folder(folder):
        return folder
    for entry in sorted(folder.iterdir()):
        name = entry.name
        if name in (LOCK, MARKER) or (name.startswith(".") and name.endswith(".tmp")):
            continue
        if entry.is_symlink():
            return entry
        if entry.is_dir():
            if name in _RUN_FOLDERS:
                continue
            if name.startswith(".") and name.endswith(".parts"):
                continue  # the staged parts of cells.parquet / ticks.parquet (io.eventlog.StagedTable) of a killed run
            inner = _foreign(entry)  # a policy of a compare is a run of its own
            if inner is not None:
                return inner
            continue
        if not name.endswith(_RUN_SUFFIXES):
            return entry
    return None


def _entries(out: Path) -> list[Path]:
    """What a folder holds besides the lock and the marker (a run that stopped before writing leaves those)."""
    return [e for e in out.iterdir() if e.name not in (LOCK, MARKER)]


def _empty(out: Path) -> None:
    """Remove everything in a run folder but its lock (which the caller holds)."""
    for entry in _entries(out):
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except OSError as e:
            raise MatcherError(f"{entry}: cannot remove the old run ({e.strerror or e})") from None


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise MatcherError(f"{out}: is a file, not a folder (--out names the folder a run writes)")
    if not out.exists() and out.is_symlink():
        raise MatcherError(f"{out}: is a broken link")


@contextlib.contextmanager
def claim(out: str | os.PathLike, kind: str = "run", overwrite: bool = False, resume: bool = False) -> Iterator[Claim]:
    """Hold ``out`` for a run's life: the lock, then the folder made ready (see the module docstring).

    ``kind`` (``"run"`` or ``"compare"``) is written to the marker. ``resume`` takes the lock of an
    existing run folder and changes nothing in it. Raises UsageError for a non-empty folder that is
    not a run, or is one and ``overwrite`` is not given; MatcherError for a folder in use (naming
    the holder) and for one the environment refuses (naming the path and the cause).
    """
    out = Path(out)
    _check_out(out)
    fd: int | None = -1
    if out.is_dir():
        fd = _try_lock(out, create=resume)
        if fd is None:
            raise _in_use(out)
    try:
        if resume:
            if fd == -1:
                raise MatcherError(f"{out}: no such run folder")
        elif out.is_dir() and _entries(out):
            bad = _foreign(out)
            if bad is None and not overwrite:
                raise UsageError(
                    f"{out}: exists and holds a run; pass --overwrite to replace it, or choose another --out"
                )
            if bad is not None:
                what = (
                    "is not a matcher run folder"
                    if bad == out
                    else f"holds {bad.relative_to(out)}, which no run writes"
                )
                raise UsageError(f"{out}: exists and is not empty ({what}); nothing was deleted: choose another --out")
        if fd == -1:
            try:
                out.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise cannot_write(out, e) from None
            fd = _try_lock(out, create=True)
            if fd is None:
                raise _in_use(out)
        took_over = lock_holder(out) or None
        if took_over is not None and _alive(took_over):
            took_over = None
        _write_holder(fd)
        if not resume:
            if overwrite:
                _empty(out)
            write_json(out / MARKER, {"kind": kind, "created": _now(), "pid": os.getpid()})
        c = Claim(out, fd, took_over)
    except BaseException:
        if fd is not None and fd >= 0:
            os.close(fd)
        raise
    try:
        yield c
    finally:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)  # a released lock names no holder: leftover info means its holder died
        os.close(fd)  # releases the lock


def _alive(info: dict) -> bool:
    pid = info.get("pid")
    if not isinstance(pid, int) or info.get("host") not in (None, socket.gethostname()):
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def wait_unlocked(out: str | os.PathLike, timeout_s: float) -> bool:
    """True once nobody holds ``out``'s lock (for tests and scripts); False after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        fd = _try_lock(Path(out), create=False)
        if fd is not None:
            if fd >= 0:
                os.close(fd)
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
