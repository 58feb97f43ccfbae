"""What a run was made from, so that a resume can check it continues the same run.

:func:`inputs` records, for every file of the trace and of the driver file, its
path, size, modification time and a BLAKE2b hash of its bytes; a driver count
is recorded as the count. :func:`options` records the run's options. A resume
compares both with what the checkpoint recorded (:func:`changes`) and refuses a
difference with one line naming it. The content decides: a file that was
touched or copied (new modification time, same bytes) is the same input; a
file of the same size with other bytes is not.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict
from typing import Any

from matcher.io.dataset import open_dataset

__all__ = ["changes", "inputs", "options"]

_CHUNK = 1 << 20
# options that do not change what a run computes
_NOT_OPTIONS = ("quiet",)


def _hash(path: str) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _files(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    root = os.fspath(path)
    files = open_dataset(root).files
    out = {}
    for f in files:
        st = os.stat(f)
        rel = os.path.relpath(f, root) if os.path.isdir(root) else os.path.basename(f)
        out[rel] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "blake2b": _hash(f)}
    return out


def inputs(trace: str | os.PathLike, drivers: str | int | None) -> dict[str, Any]:
    """The fingerprint of a run's trace and fleet (see the module docstring)."""
    fp: dict[str, Any] = {"trace": {"path": os.path.abspath(trace), "files": _files(trace)}}
    if isinstance(drivers, str):
        fp["drivers"] = {"path": os.path.abspath(drivers), "files": _files(drivers)}
    else:
        fp["drivers"] = {"count": drivers}
    return fp


def options(cfg: Any) -> dict[str, Any]:
    """The run's options (a RunConfig) as plain values, without those that do not change the result."""
    d = asdict(cfg)
    for k in _NOT_OPTIONS:
        d.pop(k, None)
    return _plain(d)


def _plain(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    return str(v)


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else k))
    return out


def _file_changes(what: str, old: dict, new: dict) -> list[str]:
    if "count" in old or "count" in new:
        if old.get("count") != new.get("count"):
            return [f"the {what} changed (count {old.get('count')} -> {new.get('count')})"]
        return []
    out = []
    of, nf = old.get("files", {}), new.get("files", {})
    for name in sorted(set(of) | set(nf)):
        a, b = of.get(name), nf.get(name)
        if a is None:
            out.append(f"the {what} changed ({name}: added)")
        elif b is None:
            out.append(f"the {what} changed ({name}: missing)")
        elif a["size"] != b["size"]:
            out.append(f"the {what} changed ({name}: size {a['size']:,} -> {b['size']:,} bytes)")
        elif a["blake2b"] != b["blake2b"]:
            out.append(f"the {what} changed ({name}: same size, different content)")
    return out


def changes(
    old_inputs: dict, new_inputs: dict, old_options: dict | None = None, new_options: dict | None = None
) -> str:
    """One line naming what differs between two fingerprints ("" if nothing does)."""
    found = _file_changes("trace", old_inputs["trace"], new_inputs["trace"])
    found += _file_changes(
        "driver file" if "path" in old_inputs["drivers"] else "fleet", old_inputs["drivers"], new_inputs["drivers"]
    )
    if old_options is not None and new_options is not None:
        a, b = _flat(old_options), _flat(new_options)
        diff = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        if diff:
            shown = ", ".join(f"{k} {a.get(k)!r} -> {b.get(k)!r}" for k in diff[:3])
            more = f" and {len(diff) - 3} more" if len(diff) > 3 else ""
            found.append(f"the options changed ({shown}{more})")
    if not found:
        return ""
    extra = f" (and {len(found) - 1} more change{'s' if len(found) > 2 else ''})" if len(found) > 1 else ""
    return found[0] + extra
