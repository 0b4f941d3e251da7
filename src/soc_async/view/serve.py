"""``soc-async view --serve``: the site on 127.0.0.1 with the standard library's server.

The site is static and works from file:// as well; serving it is for a browser on
another machine through an SSH tunnel, or for a browser that restricts file:// pages.
Binds to 127.0.0.1 only: reach it from elsewhere with ``ssh -L PORT:127.0.0.1:PORT``.
"""

from __future__ import annotations

import functools
import http.server
import sys
from pathlib import Path

from soc_async.errors import InputError

__all__ = ["make_server", "serve"]


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass  # one line per chunk request would drown the terminal


def make_server(out: str | Path, port: int = 8000) -> http.server.ThreadingHTTPServer:
    """A server of the directory ``out`` on 127.0.0.1:``port`` (0: any free port)."""
    handler = functools.partial(_Handler, directory=str(out))
    try:
        return http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    except OSError as exc:
        raise InputError(f"--port {port}: cannot listen on 127.0.0.1 ({exc.strerror})") from exc


def serve(out: str | Path, port: int = 8000) -> None:
    """Serve ``out`` until Ctrl-C (which returns normally)."""
    server = make_server(out, port)
    host, bound = server.server_address[:2]
    print(f"serving {out} at http://{host}:{bound}/ (Ctrl-C stops)", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
