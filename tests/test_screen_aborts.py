"""200 aborted connections against the real staff screen server: a few log lines, no traceback (issue 12)."""

from __future__ import annotations

import logging
import socket
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import test_confirm as confirm_tests

from edge.config import Config
from edge.screens.staffscreen import StaffScreen
from edge.screens.staffserver import serve
from edge.store import Store

cfg = confirm_tests.cfg
store = confirm_tests.store


def _abort(port: int, request: bytes) -> None:
    """Connect, send (part of) a request, and reset the connection (RST: SO_LINGER 0) without reading."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    if request:
        s.sendall(request)
    s.close()


@pytest.mark.slow
def test_aborted_connections_are_logged_at_most_once_a_minute_without_tracebacks(
    cfg: Config, store: Store, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    screen = StaffScreen(cfg, clock=lambda: confirm_tests.at("11:50"))
    server = serve(screen, "127.0.0.1", 0)
    port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    # a big pending list makes the answer large enough that the server is still writing when the reset comes
    for i in range(30):
        confirm_tests.pending(store, confirm_tests.at(f"11:{10 + i}"))
    kinds = [
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",  # the whole request, then gone before the answer
        b"GET / HTT",  # half a request line
        b"POST /confirm/1 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\ntoken=",  # half a body
        b"",  # nothing at all
    ]
    try:
        with caplog.at_level(logging.DEBUG):
            # from 8 clients at once (each reset costs the client ~0.1 s on loopback)
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(lambda i: _abort(port, kinds[i % len(kinds)]), range(200)))
            time.sleep(1.0)  # let the handler threads finish
            # the screen still answers
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
                assert s.recv(64).startswith(b"HTTP/1.0 ")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
        screen.close()
    # the aborts really happened (the server saw most of them), and were counted, not logged
    assert server.errors.seen.get("aborted", 0) >= 100, server.errors.seen
    out, err = capfd.readouterr()
    logged = [r for r in caplog.records if r.levelno >= logging.INFO]
    text = out + err + "\n".join(r.getMessage() for r in logged)
    assert "Traceback" not in text
    assert all(r.exc_info is None for r in logged)
    # one line per kind of abort at most (each kind at most once a minute), not one (or 20) per connection
    assert len(logged) <= 3, [r.getMessage() for r in logged]
    assert len(err.splitlines()) <= 3, err[:2000]
