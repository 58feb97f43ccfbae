"""The dispatcher and authenticator of this process's Serve replica.

Ray Serve runs a pickled copy of the FastAPI app in the replica, so the replica registers
its objects here (a module is imported, never copied) and the handlers look them up here.
"""

from __future__ import annotations

from typing import Any

LIVE: dict[str, Any] = {}
