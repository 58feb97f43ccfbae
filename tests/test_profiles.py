"""The hypothesis profiles of tests/conftest.py: registered, and the one the environment asks for is active."""

from __future__ import annotations

import os

from hypothesis import settings


def test_ci_profile_is_reproducible_and_lighter_than_dev():
    ci, dev = settings.get_profile("ci"), settings.get_profile("dev")
    assert ci.derandomize and not dev.derandomize
    assert ci.deadline is None and dev.deadline is None
    assert ci.max_examples < dev.max_examples


def test_the_active_profile_follows_the_environment():
    on_ci = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")
    want = settings.get_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if on_ci else "dev"))
    assert (settings.default.derandomize, settings.default.max_examples) == (want.derandomize, want.max_examples)
