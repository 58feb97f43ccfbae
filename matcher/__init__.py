"""matcher: a Ray-based distributed batch matcher for ride-hailing dispatch."""

__version__ = "0.1.0"
