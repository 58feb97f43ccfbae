"""The direct channel to a shard (matcher.dist.channel): framing, order, errors, a peer that dies.

No Ray: a ChannelServer on loopback in this process (or in a child process that is killed).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from matcher.dist.channel import Channel, ChannelClosed, ChannelServer, ChannelTimeout, RemoteError


def _echo(kind: int, payload: bytes) -> bytes:
    if kind == 9:
        raise ValueError(f"bad request of {len(payload)} bytes")
    if kind == 8:
        time.sleep(float(payload.decode()))
    return bytes([kind]) + payload[::-1]


@pytest.fixture
def server():
    srv = ChannelServer(_echo, "127.0.0.1")
    yield srv
    srv.close()


def _client(srv: ChannelServer) -> Channel:
    host, port = srv.address
    return Channel(host, port, srv.token, timeout=5.0)


@st.composite
def _requests(draw):
    """A few requests of sizes around the client's read size (1 MiB), so frames split across reads."""
    sizes = st.one_of(st.integers(0, 64), st.integers((1 << 20) - 16, (1 << 20) + 16), st.integers(0, 3 << 20))
    out = []
    for _ in range(draw(st.integers(1, 5))):
        head, n = draw(st.binary(min_size=1, max_size=8)), draw(sizes)
        out.append((draw(st.integers(0, 7)), (head * (n // len(head) + 1))[:n]))
    return out


@settings(max_examples=25, deadline=None)
@given(reqs=_requests(), order=st.randoms())
def test_every_reply_answers_its_own_request_in_any_order_of_asking(reqs, order):
    srv = ChannelServer(_echo, "127.0.0.1")
    try:
        ch = _client(srv)
        seqs = [ch.send(kind, payload) for kind, payload in reqs]
        asked = list(range(len(reqs)))
        order.shuffle(asked)
        for i in asked:
            kind, payload = reqs[i]
            assert ch.recv(seqs[i], timeout=10.0) == bytes([kind]) + payload[::-1]
        ch.close()
    finally:
        srv.close()


def test_a_handler_error_comes_back_as_remote_error_and_the_stream_goes_on(server):
    ch = _client(server)
    bad, good = ch.send(9, b"abc"), ch.send(1, b"xy")
    with pytest.raises(RemoteError, match="ValueError: bad request of 3 bytes"):
        ch.recv(bad, timeout=5.0)
    assert ch.recv(good, timeout=5.0) == b"\x01yx"


def test_a_slow_reply_times_out_then_still_arrives(server):
    ch = _client(server)
    seq = ch.send(8, b"0.3")
    assert not ch.done(seq)
    t0 = time.monotonic()
    with pytest.raises(ChannelTimeout):
        ch.recv(seq, timeout=0.05)
    assert time.monotonic() - t0 < 0.25
    assert ch.recv(seq, timeout=5.0) == b"\x08" + b"3.0"


def test_done_says_when_a_reply_has_come(server):
    ch = _client(server)
    seq = ch.send(1, b"a")
    deadline = time.monotonic() + 5
    while not ch.done(seq):
        assert time.monotonic() < deadline
        time.sleep(0.001)
    assert ch.recv(seq, timeout=1e-3) == b"\x01a"  # done: no wait needed


def test_a_wrong_token_gets_no_answer_only_a_closed_stream(server):
    host, port = server.address
    ch = Channel(host, port, b"x" * 16, timeout=5.0)
    seq = ch.send(1, b"hello")
    with pytest.raises(ChannelClosed):
        ch.recv(seq, timeout=5.0)


def test_on_stream_runs_once_per_stream_before_its_first_request():
    seen: list[str] = []
    srv = ChannelServer(lambda k, p: (seen.append("req"), b"")[1], "127.0.0.1", on_stream=lambda: seen.append("stream"))
    try:
        for _ in range(2):
            ch = _client(srv)
            ch.recv(ch.send(1, b""), timeout=5.0)
            ch.recv(ch.send(1, b""), timeout=5.0)
            ch.close()
        assert seen == ["stream", "req", "req", "stream", "req", "req"]
    finally:
        srv.close()


def test_a_peer_that_closes_the_stream_fails_every_pending_reply_at_once():
    lst = socket.create_server(("127.0.0.1", 0))
    token = b"t" * 16

    def peer():
        conn, _ = lst.accept()
        conn.recv(16)
        conn.close()  # goes away with requests unanswered

    th = threading.Thread(target=peer)
    th.start()
    ch = Channel("127.0.0.1", lst.getsockname()[1], token, timeout=5.0)
    seqs = [ch.send(1, b"x" * 1000) for _ in range(3)]
    th.join()
    t0 = time.monotonic()
    for seq in seqs:
        with pytest.raises(ChannelClosed):
            ch.recv(seq, timeout=10.0)
    assert time.monotonic() - t0 < 2.0  # not the deadline: the end of the stream
    assert ch.done(seqs[0])
    ch.send(1, b"after")  # a send on a dead stream does not raise; its reply fails
    with pytest.raises(ChannelClosed):
        ch.recv(seqs[-1] + 1, timeout=1.0)
    lst.close()


_CHILD = """
import sys, time
from matcher.dist.channel import ChannelServer
def slow(kind, payload):
    time.sleep(30)
    return b""
srv = ChannelServer(slow, "127.0.0.1")
sys.stdout.write(f"{srv.address[1]} {srv.token.hex()}\\n")
sys.stdout.flush()
time.sleep(60)
"""


def test_a_server_process_killed_mid_request_fails_the_reply_at_once():
    """A real process death (SIGKILL) while a request is being served: ChannelClosed, not a wait."""
    child = subprocess.Popen([sys.executable, "-c", _CHILD], stdout=subprocess.PIPE, text=True)
    try:
        port, token = child.stdout.readline().split()
        ch = Channel("127.0.0.1", int(port), bytes.fromhex(token), timeout=5.0)
        seq = ch.send(1, b"work")
        time.sleep(0.2)
        os.kill(child.pid, signal.SIGKILL)
        t0 = time.monotonic()
        with pytest.raises(ChannelClosed):
            ch.recv(seq, timeout=20.0)
        assert time.monotonic() - t0 < 5.0
    finally:
        child.kill()
        child.wait()


def test_nothing_listening_fails_at_connect():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(ChannelClosed, match="cannot connect"):
        Channel("127.0.0.1", port, b"t" * 16, timeout=2.0)


def test_close_ends_the_accept_thread_and_refuses_new_streams():
    before = {t.ident for t in threading.enumerate() if t.name == "matcher-channel-accept"}
    srv = ChannelServer(_echo, "127.0.0.1")
    mine = [t for t in threading.enumerate() if t.name == "matcher-channel-accept" and t.ident not in before]
    assert len(mine) == 1
    srv.close()
    mine[0].join(timeout=5.0)
    assert not mine[0].is_alive()
    with pytest.raises(ChannelClosed):
        _client(srv)
