"""The live dispatch service: the HTTP API on Ray Serve, driving the same shards as the replay.

The only package that imports ``ray.serve``.
"""
