"""A direct channel from the coordinator to one shard actor: framed bytes over one TCP stream.

Why: a Ray actor call costs far more than the bytes it carries. On this 2-core machine an
actor call that sends 7 KB and does 3 ms of work took 5.1 ms end to end (median of 300), the
same exchange over a socket to a thread of the same actor 3.2 ms; inside a replay, Ray's share
of a shard's answered tick was about 3.8 ms against a shard's own 3-4 ms of work. The
shard actor still lives, is placed, restarted and killed by Ray; only its tick and round-2
calls travel here (:mod:`matcher.dist.ray_backend`).

Pure standard library, no Ray. Protocol: the client opens the stream and sends the server's
token (a random 16 bytes the server made, which the client got through Ray); then each
request is a frame (kind byte, 8-byte length, payload) and the server answers every request
with one frame, in order (kind ``OK``, or ``ERROR`` with the handler's exception as text).
One stream carries one caller's calls in order, as Ray does for one caller and one actor.

Guarantees:
- reply ``i`` answers request ``i`` of its stream; the server runs a stream's requests one
  at a time, in the order sent;
- a peer that goes away (its process died, the stream was reset) surfaces as
  :class:`ChannelClosed` on every reply not yet received, never as a wait past the deadline
  given; a deadline passed is :class:`ChannelTimeout`;
- an exception in the server's handler surfaces as :class:`RemoteError` with its type and
  message, and the stream goes on.
"""

from __future__ import annotations

import hmac
import secrets
import select
import socket
import struct
import threading
import time
from collections.abc import Callable

__all__ = [
    "ERROR",
    "OK",
    "Channel",
    "ChannelClosed",
    "ChannelError",
    "ChannelServer",
    "ChannelTimeout",
    "RemoteError",
]

OK = 0
ERROR = 1
_HEAD = struct.Struct("<BQ")  # kind, payload length
_TOKEN_BYTES = 16
_READ = 1 << 20


class ChannelError(Exception):
    """The channel failed (see the subclasses)."""


class ChannelClosed(ChannelError):
    """The peer is gone: the stream ended or was reset (a shard process that died)."""


class ChannelTimeout(ChannelError):
    """No reply within the deadline."""


class RemoteError(RuntimeError):
    """The server's handler raised; the message is its ``Type: message``."""


def _nodelay(sock: socket.socket) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # a frame goes out whole, at once


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray(n)
    view, got = memoryview(buf), 0
    while got < n:
        k = sock.recv_into(view[got:])
        if not k:
            raise ChannelClosed("the stream ended")
        got += k
    return bytes(buf)


class ChannelServer:
    """Serves ``handler(kind, payload) -> reply`` on a TCP port of ``host`` (any free port).

    Each accepted stream is served by its own daemon thread, after its token is checked;
    ``lock`` (if given) is held around every call of the handler, so that it never runs
    at the same time as the owner's other methods that take it. ``on_stream`` (if given)
    is called, under the lock, when a stream's token has been checked, before its first
    request.
    """

    def __init__(
        self,
        handler: Callable[[int, bytes], bytes],
        host: str,
        lock: threading.Lock | None = None,
        on_stream: Callable[[], None] | None = None,
    ) -> None:
        self.handler = handler
        self.on_stream = on_stream
        self.lock = lock or threading.Lock()
        self.token = secrets.token_bytes(_TOKEN_BYTES)
        self._sock = socket.create_server((host, 0))
        self.address: tuple[str, int] = (host, int(self._sock.getsockname()[1]))
        threading.Thread(target=self._accept, name="matcher-channel-accept", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._serve, args=(conn,), name="matcher-channel", daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.settimeout(10.0)  # the token comes at once or never
                if not hmac.compare_digest(_recv_exact(conn, _TOKEN_BYTES), self.token):
                    return
                conn.settimeout(None)
                _nodelay(conn)
                if self.on_stream is not None:
                    with self.lock:
                        self.on_stream()
                while True:
                    kind, n = _HEAD.unpack(_recv_exact(conn, _HEAD.size))
                    payload = _recv_exact(conn, n)
                    try:
                        with self.lock:
                            reply, status = self.handler(kind, payload), OK
                    except Exception as e:  # noqa: BLE001 - the caller gets it as RemoteError
                        reply, status = f"{type(e).__name__}: {e}".encode(), ERROR
                    conn.sendall(_HEAD.pack(status, len(reply)) + reply)
            except (ChannelClosed, OSError):
                return  # the client went away (or sent no token): this stream is done

    def close(self) -> None:
        """Stop accepting streams (the accept thread ends); streams already open go on."""
        try:
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept(); close() alone does not
        except OSError:
            pass  # not connected: some kernels refuse shutdown of a listening socket
        self._sock.close()


class Channel:
    """The client end: requests go out at once (:meth:`send`), replies are read in order.

    A reply is asked for by the number :meth:`send` gave its request; replies before it are
    kept until asked for. A send on a broken stream does not raise: the channel is marked
    closed and every reply not yet received raises :class:`ChannelClosed`.
    """

    def __init__(self, host: str, port: int, token: bytes, timeout: float) -> None:
        try:
            self._sock = socket.create_connection((host, port), timeout=timeout)
            _nodelay(self._sock)
            self._sock.sendall(token)
        except OSError as e:
            raise ChannelClosed(f"cannot connect to {host}:{port}: {e}") from None
        self._sock.setblocking(False)
        self._buf = bytearray()
        self._sent = 0  # requests sent; request i is answered by reply i
        self._read = 0  # replies parsed
        self._replies: dict[int, tuple[int, bytes]] = {}
        self.closed = False

    def send(self, kind: int, payload: bytes) -> int:
        """Send one request; its number (for :meth:`recv`)."""
        seq = self._sent
        self._sent += 1
        if not self.closed:
            try:
                self._sock.setblocking(True)
                self._sock.sendall(_HEAD.pack(kind, len(payload)) + payload)
            except OSError:
                self._close()
            finally:
                if not self.closed:
                    self._sock.setblocking(False)
        return seq

    def done(self, seq: int) -> bool:
        """True if request ``seq``'s reply has come (or can never come): :meth:`recv` will not wait."""
        if seq not in self._replies and not self.closed:
            self._pump(0.0)
        return seq in self._replies or self.closed

    def recv(self, seq: int, timeout: float) -> bytes:
        """The reply to request ``seq``, waiting at most ``timeout`` seconds for it."""
        deadline = time.monotonic() + timeout
        while seq not in self._replies:
            if self.closed:
                raise ChannelClosed("the shard's stream ended")
            left = deadline - time.monotonic()
            if left <= 0:
                raise ChannelTimeout(f"no reply within {timeout:.1f} s")
            self._pump(left)
        status, payload = self._replies.pop(seq)
        if status != OK:
            raise RemoteError(payload.decode(errors="replace"))
        return payload

    def _pump(self, wait: float) -> None:
        """Read what the stream has (waiting up to ``wait`` s for something), parse whole frames."""
        readable, _, _ = select.select([self._sock], [], [], wait)
        if not readable:
            return
        while True:
            try:
                chunk = self._sock.recv(_READ)
            except BlockingIOError:
                break
            except OSError:
                self._close()
                break
            if not chunk:
                self._close()
                break
            self._buf += chunk
            if len(chunk) < _READ:
                break
        while len(self._buf) >= _HEAD.size:
            status, n = _HEAD.unpack_from(self._buf)
            if len(self._buf) < _HEAD.size + n:
                break
            self._replies[self._read] = (status, bytes(self._buf[_HEAD.size : _HEAD.size + n]))
            del self._buf[: _HEAD.size + n]
            self._read += 1

    def _close(self) -> None:
        self.closed = True
        try:
            self._sock.close()
        except OSError:  # pragma: no cover - already gone
            pass

    def close(self) -> None:
        self._close()
