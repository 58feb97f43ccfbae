"""The package's boundaries, checked: the layers of pyproject.toml's import-linter contracts,
and the one module each that may import Ray and Ray Serve."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "matcher"


def test_import_contracts_hold():
    lint = Path(sys.executable).parent / "lint-imports"
    proc = subprocess.run([str(lint)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "broken" in proc.stdout and " 0 broken" in proc.stdout


def _imports(pattern: str) -> list[str]:
    rx = re.compile(pattern, re.M)
    return sorted(str(p.relative_to(REPO)) for p in PACKAGE.rglob("*.py") if rx.search(p.read_text()))


def test_only_the_ray_module_and_the_service_import_ray():
    found = _imports(r"^\s*(import ray\b|from ray\b)")
    allowed = {"matcher/dist/ray_backend.py"}
    assert [f for f in found if f not in allowed and not f.startswith("matcher/serve/")] == []


def test_only_the_service_imports_ray_serve():
    found = _imports(r"^\s*(import ray\.serve|from ray\.serve|from ray import serve)")
    assert [f for f in found if not f.startswith("matcher/serve/")] == []


def test_the_folders_show_the_architecture():
    subpackages = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists())
    assert subpackages == ["analysis", "core", "dist", "io", "serve", "sim"]
    flat = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert flat == ["__init__.py", "__main__.py", "cli.py", "config.py", "errors.py"]
