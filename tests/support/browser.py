"""A real browser for the tests: the system's Chromium (`make browser`, or `apt-get install chromium`), headless,
never one a test tool downloads (conftest's ``browser`` fixture launches it; without it the tests that use it fail,
saying so); and pages served from another origin."""

import http.server
import os
import threading
from contextlib import contextmanager

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
]


@contextmanager
def page_origin(html: str):
    """A page served from another origin on this machine (its URL): a front-end beside the server. Chromium lets
    such a page reach a loopback server; a page it got from nowhere (a routed URL) it does not."""

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            body = html.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def other_name(url: str) -> str:
    """The server's URL under another name (so another origin than a page served from 127.0.0.1)."""
    return url.replace("127.0.0.1", "localhost")
