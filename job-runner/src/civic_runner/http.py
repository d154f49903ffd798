"""/healthz, /readyz and /metrics on a small threaded WSGI server beside the event loop."""

from __future__ import annotations

import socketserver
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app

from civic_runner.metrics import REGISTRY

Check = Callable[[], tuple[bool, str]]


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # probes every few seconds: no access log
        return


class _ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


def make_app(healthy: Check, ready: Check) -> Callable[..., Iterable[bytes]]:
    metrics_app = make_wsgi_app(REGISTRY)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return metrics_app(environ, start_response)  # type: ignore[no-any-return]
        check = {"/healthz": healthy, "/health": healthy, "/livez": healthy, "/readyz": ready}.get(path)
        if check is None:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found\n"]
        ok, detail = check()
        start_response("200 OK" if ok else "503 Service Unavailable", [("Content-Type", "text/plain")])
        return [(detail or ("ok" if ok else "unavailable")).encode() + b"\n"]

    return app


def serve(host: str, port: int, healthy: Check, ready: Check) -> WSGIServer:
    server = make_server(host, port, make_app(healthy, ready), _ThreadingWSGIServer, _QuietHandler)
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    return server
