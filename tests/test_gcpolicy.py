"""The service's garbage-collection policy (matcher.serve.gcpolicy), in a child process of its own:
it changes the collector of the whole process, which a test must not do to pytest's."""

from __future__ import annotations

import subprocess
import sys

CHILD = r"""
import gc, time
from matcher.serve import gcpolicy

young = gc.get_threshold()[:2]
t1 = gcpolicy.rare_full_collections(every_s=0.2)
assert gcpolicy.rare_full_collections() is t1 and t1.is_alive()  # idempotent
assert gc.get_freeze_count() > 1000  # what was alive at startup is out of every later scan
assert gc.get_threshold()[:2] == young and gc.get_threshold()[2] >= 1 << 30  # full: not by count

class Cycle:
    pass

full = []
gc.callbacks.append(lambda phase, info: phase == "stop" and info["generation"] == 2 and full.append(info["collected"]))
for _ in range(200_000):  # enough churn for many young collections and, by default, several full ones
    a, b = Cycle(), Cycle()
    a.b, b.a = b, a
assert full == [], full  # no full collection by allocation count
time.sleep(0.6)
assert full, "the timer ran no full collection"
print("ok", len(full))
"""


def test_full_collections_run_on_the_timer_not_on_allocation_counts():
    done = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok ")
