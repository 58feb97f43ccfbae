"""Files that appear whole or not at all: write to a hidden temporary name in the
same folder, then rename into place (a rename within a folder is atomic)."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def temp_name(path: str | os.PathLike) -> Path:
    """A hidden temporary name beside ``path`` (``.NAME.PID.RANDOM.tmp``)."""
    p = Path(path)
    return p.with_name(f".{p.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path to write; on success it is renamed to ``path``, on error removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
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
