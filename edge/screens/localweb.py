"""What the two local pages (the staff screen and the senior display) share: a threaded HTTP server that,
when bound to loopback, answers only requests naming this machine (a DNS-rebinding page would send its
own host name), and responses that are never cached, sniffed, framed or given a referrer; and their page
templates (edge/screens/templates/*.html, Jinja2) and the style sheets and scripts they inline
(edge/screens/static/), read as package data."""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import logging
import socket
import sys
from functools import cache
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any

import jinja2

from edge.security.guards import Throttle

log = logging.getLogger(__name__)

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
#: a client that went away mid-request (closed tab, reload, reset, timeout): not a fault of ours
ABORTED: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError)


def _package_file(*parts: str) -> str:
    return resources.files(__package__).joinpath(*parts).read_text(encoding="utf-8")


@cache
def static_text(name: str) -> str:
    """A style sheet or script from edge/screens/static/, as the page inlines it (so its CSP hash holds)."""
    return _package_file("static", name).strip()


def _load_template(name: str) -> str:
    """Templates are written one tag a line, indented, for reading; the page is sent without that
    indentation and those line breaks, as if written on one line. So a line break inside running text
    would join two words: break lines only between tags."""
    return "".join(line.strip() for line in _package_file("templates", name).splitlines())


@cache
def _templates() -> jinja2.Environment:
    # autoescape everywhere: every value on these pages is text (names come from the roster)
    return jinja2.Environment(
        loader=jinja2.FunctionLoader(_load_template),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        auto_reload=False,
    )


def render(template: str, **values: Any) -> str:
    """One page from edge/screens/templates/; a missing value is an error, never an empty string."""
    return _templates().get_template(template).render(**values)


def csp_hash(text: str) -> str:
    """The Content-Security-Policy source that allows exactly this inline style or script."""
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def host_only(host_header: str) -> str:
    h = host_header.strip().lower()
    if h.startswith("["):
        return h[1 : h.find("]")] if "]" in h else h
    return h.rsplit(":", 1)[0] if h.count(":") == 1 else h


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class LocalServer(ThreadingHTTPServer):
    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        host = address[0]
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        #: bound to loopback: only these Host names
        self.allowed_hosts: frozenset[str] | None = LOOPBACK_NAMES | {host} if is_loopback(host) else None
        #: aborted connections and failed requests: one log line a minute per kind, never a traceback (200
        #: aborted connections once gave 5,462 lines of tracebacks)
        self.errors = Throttle(60.0)
        super().__init__(address, handler)

    def note_abort(self, e: BaseException) -> None:
        self.errors.log(
            log, logging.INFO, "aborted", "%s: a client went away before its answer was sent (%s)",
            self.url, type(e).__name__,
        )

    def handle_error(self, request: Any, client_address: Any) -> None:
        """socketserver prints a traceback to stderr for anything a handler raises: say it in one line."""
        e = sys.exc_info()[1]
        if e is None or isinstance(e, ABORTED):
            self.note_abort(e or ConnectionError())
            return
        self.errors.log(
            log, logging.ERROR, f"error:{type(e).__name__}", "%s: a request from %s failed: %s: %s",
            self.url, client_address[0] if client_address else "?", type(e).__name__, e,
        )

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        host = host.decode() if isinstance(host, bytes) else host
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}/"

    def host_allowed(self, host_header: str) -> bool:
        return self.allowed_hosts is None or host_only(host_header) in self.allowed_hosts


def send(
    handler: BaseHTTPRequestHandler,
    status: HTTPStatus,
    body: str | bytes,
    ctype: str,
    csp: str,
    headers: dict[str, str] | None = None,
) -> None:
    """One answer with the protective headers every page and image shares. Text is sent as UTF-8 (the
    charset is named); bytes (an image) as they are."""
    data = body.encode("utf-8") if isinstance(body, str) else body
    handler.send_response(status)
    handler.send_header("Content-Type", f"{ctype}; charset=utf-8" if isinstance(body, str) else ctype)
    handler.send_header("Content-Length", str(len(data)))
    handler.send_header("Cache-Control", "no-store")
    handler.send_header("X-Content-Type-Options", "nosniff")
    handler.send_header("X-Frame-Options", "DENY")
    handler.send_header("Referrer-Policy", "no-referrer")
    handler.send_header("Content-Security-Policy", csp)
    for k, v in (headers or {}).items():
        handler.send_header(k, v)
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(data)
