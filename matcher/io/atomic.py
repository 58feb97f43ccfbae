"""Files that appear whole or not at all: write to a hidden temporary name in the
same folder, fsync it, then rename into place (a rename within a folder is atomic) and
fsync the folder, so that after a crash or a power cut ``path`` holds the old file or the
whole new one, never a torn or empty one.

Every writer of the project goes through here: :func:`atomic_path` (JSON, text, event-log
parts, checkpoints) and :class:`~matcher.io.writers.AtomicParquetWriter` (via :func:`commit`).

A write that the environment refuses (a read-only folder, a full disk, a file
where a folder should be) raises :class:`~matcher.errors.MatcherError` with one
line naming the path and the cause (``OUT/run.json: cannot write (No space left
on device)``), never a bare ``OSError``."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from matcher.errors import MatcherError


def temp_name(path: str | os.PathLike) -> Path:
    """A hidden temporary name beside ``path`` (``.NAME.PID.RANDOM.tmp``)."""
    p = Path(path)
    return p.with_name(f".{p.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def short_error(exc: BaseException) -> str:
    """The part of an OS or Arrow error message that says what is wrong, on one line."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    # Arrow repeats the path and a lot of context; keep the tail that says what is wrong.
    for marker in (
        "Parquet magic bytes",
        "smaller than the minimum",
        "Couldn't deserialize",
        "No such file",
        "is a directory",
        "Permission denied",
        "No space left",
        "Read-only file system",
        "Not a directory",
    ):
        i = text.find(marker)
        if i >= 0:
            text = text[i:]
            break
    else:
        if isinstance(exc, OSError) and isinstance(exc.strerror, str) and exc.strerror:
            text = " ".join(exc.strerror.split())  # without "[Errno N]" and the repeated path
    return text if len(text) <= 160 else text[:157] + "..."


def cannot_write(path: str | os.PathLike, exc: BaseException) -> MatcherError:
    """The one-line error for a write the environment refused."""
    return MatcherError(f"{os.fspath(path)}: cannot write ({short_error(exc)})")


def _fsync_dir(folder: str | os.PathLike) -> None:
    """Make a rename in ``folder`` durable. Best effort: some platforms and file systems cannot
    open or fsync a folder; the file's content was synced already, only the rename may be lost."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def commit(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """fsync the written temporary file ``tmp``, rename it to ``path`` and fsync the folder.

    Raises ``OSError`` as is (the callers turn it into their one-line error and remove ``tmp``)."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(os.path.dirname(os.path.abspath(path)))


def move_dir(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Rename the folder ``src`` to ``dst`` (same file system: atomic) and fsync both parents."""
    os.replace(src, dst)
    _fsync_dir(os.path.dirname(os.path.abspath(dst)))
    _fsync_dir(os.path.dirname(os.path.abspath(src)))


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path to write (and close); on success it is committed to ``path``
    (fsync, rename, fsync of the folder: :func:`commit`), on error removed.

    An ``OSError`` (raised by the writer or the commit) becomes a MatcherError naming ``path``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise cannot_write(path.parent, e) from None
    tmp = temp_name(path)
    try:
        yield tmp
        commit(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise cannot_write(path, e) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, allow_nan=False) + "\n")


def remove_leftovers(folder: str | os.PathLike) -> int:
    """Delete temporary files a killed writer left behind (below ``folder``); returns how many."""
    n = 0
    for f in Path(folder).glob("**/.*.tmp"):
        f.unlink(missing_ok=True)
        n += 1
    return n


def sync_append(f: Any, created: str | os.PathLike | None = None) -> None:
    """fsync an open file that is appended to in place (the live service's journal: its group
    commit), and the folder too when the file was just ``created`` (so that its name survives)."""
    f.flush()
    os.fsync(f.fileno())
    if created is not None:
        _fsync_dir(os.path.dirname(os.path.abspath(created)))
