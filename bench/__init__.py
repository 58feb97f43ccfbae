"""Benchmarks of `matcher`, measured side by side against the baselines and the limits.

Run ``python -m bench.run`` (``--quick`` for a smoke run); see bench/run.py.
"""
