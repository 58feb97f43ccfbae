"""Bearer tokens: HS256 JWTs (pyjwt) carrying a role and a subject id.

Roles: ``rider`` (requests and cancels its own rides), ``driver`` (moves itself, answers
its own offers, reports the status of its own rides), ``service`` (gateways and
internal callers: batched pings, candidate queries, any ride). A driver token may
carry ``vehicle`` (uberx, xl, black) and ``rating``; a driver file given to the
service overrides both.

The secret is read from a file and never printed, logged or written anywhere else.
Without ``--secret-file`` every command uses ``~/.config/matcher/secret``, created
(mode 0600, 32 random bytes as hex) on first use, so ``matcher serve``,
``matcher token`` and ``matcher loadgen`` agree on one machine without flags.
"""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import jwt

from matcher.config import VEHICLE_TYPES
from matcher.errors import MatcherError

ROLES = ("rider", "driver", "service")
ALGORITHM = "HS256"
DEFAULT_SECRET = Path("~/.config/matcher/secret")
_MIN_SECRET_BYTES = 16


def secret_path(path: str | os.PathLike | None) -> Path:
    return Path(path).expanduser() if path else DEFAULT_SECRET.expanduser()


def load_secret(path: str | os.PathLike | None, create: bool = True) -> bytes:
    """The signing secret from ``path`` (default ~/.config/matcher/secret, created if absent)."""
    p = secret_path(path)
    if not p.exists():
        if path is not None or not create:
            raise MatcherError(f"secret file {p} does not exist")
        p.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
    try:
        data = p.read_bytes().strip()
    except OSError as e:
        raise MatcherError(f"cannot read secret file {p}: {e.strerror}") from None
    if len(data) < _MIN_SECRET_BYTES:
        raise MatcherError(f"secret file {p} holds fewer than {_MIN_SECRET_BYTES} bytes")
    return data


def issue(
    secret: bytes,
    role: str,
    sub: str,
    ttl_s: float | None = None,
    vehicle: str | None = None,
    rating: float | None = None,
) -> str:
    """A signed token for ``sub`` in ``role`` (expiring after ``ttl_s`` seconds if given)."""
    if role not in ROLES:
        raise MatcherError(f"unknown role {role!r} (one of {', '.join(ROLES)})")
    if not sub or len(sub) > 128:
        raise MatcherError("the subject must be 1 to 128 characters")
    claims: dict = {"sub": sub, "role": role, "iat": int(time.time())}
    if ttl_s is not None:
        claims["exp"] = int(time.time() + ttl_s)
    if vehicle is not None:
        if vehicle not in VEHICLE_TYPES:
            raise MatcherError(f"unknown vehicle type {vehicle!r} (one of {', '.join(VEHICLE_TYPES)})")
        claims["vehicle"] = vehicle
    if rating is not None:
        if not 1.0 <= rating <= 5.0:
            raise MatcherError("rating must be within 1..5")
        claims["rating"] = float(rating)
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


@dataclass(frozen=True)
class Claims:
    role: str
    sub: str
    vehicle: str | None = None
    rating: float | None = None
    exp: float | None = None


class AuthError(Exception):
    """401 (no token, bad token) or 403 (wrong role or subject)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class Authenticator:
    """Verifies bearer tokens; verified tokens are cached (expiry is still checked every time)."""

    def __init__(self, secret: bytes, cache_size: int = 200_000):
        self._secret = secret
        self._cache: dict[str, Claims] = {}
        self._cache_size = cache_size

    def __repr__(self) -> str:  # never show the secret
        return "Authenticator(HS256)"

    def verify(self, authorization: str | None) -> Claims:
        if not authorization:
            raise AuthError(401, "missing bearer token (Authorization: Bearer <token>)")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise AuthError(401, "the Authorization header must be 'Bearer <token>'")
        c = self._cache.get(token)
        if c is None:
            try:
                raw = jwt.decode(token, self._secret, algorithms=[ALGORITHM], options={"require": ["sub"]})
            except jwt.ExpiredSignatureError:
                raise AuthError(401, "token expired") from None
            except jwt.PyJWTError:
                raise AuthError(401, "invalid token") from None
            role = raw.get("role")
            if role not in ROLES or not isinstance(raw.get("sub"), str):
                raise AuthError(401, "invalid token (role or subject)")
            vehicle = raw.get("vehicle")
            rating = raw.get("rating")
            c = Claims(
                role,
                raw["sub"],
                vehicle if vehicle in VEHICLE_TYPES else None,
                float(rating) if isinstance(rating, (int, float)) and 1 <= rating <= 5 else None,
                float(raw["exp"]) if "exp" in raw else None,
            )
            if len(self._cache) >= self._cache_size:
                self._cache.clear()
            self._cache[token] = c
        elif c.exp is not None and c.exp < time.time():
            self._cache.pop(token, None)
            raise AuthError(401, "token expired")
        return c

    def require(self, authorization: str | None, *roles: str) -> Claims:
        c = self.verify(authorization)
        if c.role not in roles:
            raise AuthError(403, f"this endpoint needs a {' or '.join(roles)} token, not {c.role}")
        return c
