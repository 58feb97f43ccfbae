"""Files that appear whole or not at all: write to a hidden temporary name in the
same folder, then rename into place (a rename within a folder is atomic).

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


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path to write; on success it is renamed to ``path``, on error removed.

    An ``OSError`` (raised by the writer or the rename) becomes a MatcherError naming ``path``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise cannot_write(path.parent, e) from None
    tmp = temp_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
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
