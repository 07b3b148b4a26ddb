"""A third-party site that embeds a meeting in an iframe: one HTTPS page, for the iframe test.

usage: embedder.py HOST PORT CERT KEY ROOM_URL
"""

from __future__ import annotations

import html
import http.server
import ssl
import sys

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Intranet</title></head>
<body><h1>Team page</h1>
<iframe id="meeting" src="{src}" allow="camera; microphone; display-capture; autoplay"
  width="900" height="560"></iframe>
</body></html>
"""


def main() -> None:
    host, port, cert, key, room_url = sys.argv[1:6]
    body = PAGE.format(src=html.escape(room_url, quote=True)).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer((host, int(port)), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
