#!/usr/bin/env python3
"""sgl-metrics-relay: GET /metrics on its own port, read from the engine on 127.0.0.1 (stdlib only).

SGLang 0.5.23 serves Prometheus metrics only on its API port (``--enable-metrics``; no separate
metrics port in HTTP mode). The gateway-only firewall (roles/sglang_firewall) closes that port to the
monitoring hosts; this relay lets them scrape the metrics, and nothing else:

* ``GET /metrics`` (and ``HEAD``) -> ``GET http://127.0.0.1:<engine port>/metrics``, body and
  content type passed back, the scraper's ``Accept`` header passed on;
* the engine down or answering non-200 -> 503, so Prometheus marks the target down (``up == 0``)
  exactly as when it scraped the engine itself (the SGLangEngineDown alert keeps its meaning);
* any other path -> 404, any other method -> 405. No request body is read, nothing is forwarded
  but the one path.

Usage: sgl_metrics_relay.py --listen 0.0.0.0 --port 9480 --engine-port 8000 [--timeout 10]
"""

from __future__ import annotations

import argparse
import http.client
import socket
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_BYTES = 64 * 1024 * 1024  # a scrape larger than this is refused (503), not buffered


class Relay(BaseHTTPRequestHandler):
    server_version = "sgl-metrics-relay"
    sys_version = ""
    engine_port = 8000
    timeout_s = 10.0

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass  # one line per scrape every few seconds is noise; errors are logged below

    def _send(self, code: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _relay(self) -> None:
        if self.path.split("?", 1)[0] != "/metrics":
            self._send(404, b"only /metrics is served here\n")
            return
        headers = {"Accept": self.headers.get("Accept", "text/plain")}
        conn = http.client.HTTPConnection("127.0.0.1", self.engine_port, timeout=self.timeout_s)
        try:
            conn.request("GET", "/metrics", headers=headers)
            resp = conn.getresponse()
            body = resp.read(MAX_BYTES + 1)
            if resp.status != 200 or len(body) > MAX_BYTES:
                raise OSError(f"engine answered {resp.status} ({len(body)} bytes)")
            self._send(200, body, resp.getheader("Content-Type", "text/plain; version=0.0.4"))
        except (OSError, http.client.HTTPException) as exc:
            print(f"engine 127.0.0.1:{self.engine_port}/metrics: {exc}", file=sys.stderr, flush=True)
            self._send(503, f"engine metrics unavailable: {exc}\n".encode())
        finally:
            conn.close()

    def do_GET(self):  # noqa: N802 - http.server's name
        self._relay()

    def do_HEAD(self):  # noqa: N802
        self._relay()

    def _refuse(self):
        self._send(405, b"GET /metrics only\n")

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse  # noqa: N815


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="0.0.0.0")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--engine-port", type=int, required=True)
    parser.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args(argv)
    Relay.engine_port = args.engine_port
    Relay.timeout_s = args.timeout
    server_class = type("Server", (ThreadingHTTPServer,),
                        {"address_family": socket.AF_INET6 if ":" in args.listen else socket.AF_INET})
    server = server_class((args.listen, args.port), Relay)
    server.daemon_threads = True
    print(f"sgl-metrics-relay: {args.listen}:{args.port} -> 127.0.0.1:{args.engine_port}/metrics", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
