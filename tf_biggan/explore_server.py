"""The explorer's HTTP server: the standard library's `ThreadingHTTPServer`, on 127.0.0.1 by
default, serving the page in `explore_static/` and the endpoints behind it.

| route | answer |
|---|---|
| `GET /` (`/index.html`), `/app.js`, `/style.css` | the page, its script and its style |
| `GET /api/info` | JSON: the model and the server's limits (`Explorer.info`) |
| `GET /api/sample.png` | PNG: `class` (repeated: one row each), `n`, `truncation`, `seed` |
| `GET /api/interpolate.png` | PNG: `class_a`, `seed_a`, `class_b`, `seed_b`, `frames`, `mode`, `truncation` |

This module knows HTTP and query strings, nothing about generators: it turns a query into
typed keyword arguments (an int for `n`, `seed`, `seed_a`, `seed_b`, `frames`; a float for
`truncation`; a list of strings for `class`) and calls the explorer object it was given
(`tf_biggan.explore.Explorer`), which checks the values against the model and renders. A
value that does not parse, an unknown or repeated parameter, and every `BadRequest` the
explorer raises answer 400 with `{"error": "..."}`; an unknown path 404 (also JSON); an
unexpected exception 500, logged with its traceback. Each request has its own
thread, so a bad or slow request never stops the server from answering the next one.

Nothing the page needs comes from another host: the HTML, script and style are files of
this package, and every response carries a Content-Security-Policy that lets the page load
and fetch only from this server (and show the images it fetched, as `blob:` URLs).
"""

from __future__ import annotations

import difflib
import http
import importlib.resources
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

__all__ = ["BadRequest", "ExploreServer"]

_STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}

# Query parameter -> (keyword argument of the explorer's method, how its text is read).
_SAMPLE_PARAMETERS = {
    "class": ("classes", "list"),
    "n": ("n", "int"),
    "truncation": ("truncation", "float"),
    "seed": ("seed", "int"),
}
_INTERPOLATE_PARAMETERS = {
    "class_a": ("class_a", "str"),
    "class_b": ("class_b", "str"),
    "seed_a": ("seed_a", "int"),
    "seed_b": ("seed_b", "int"),
    "frames": ("frames", "int"),
    "mode": ("mode", "str"),
    "truncation": ("truncation", "float"),
}

# The page may load and fetch from this server only; `blob:` is how it shows and offers
# for download the PNG bytes it fetched, `data:` its empty icon (no /favicon.ico request).
# Nothing else: no other host, no inline script.
_CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


class BadRequest(ValueError):
    """A request the server cannot answer as asked: its message goes back to the caller as
    `{"error": message}` with HTTP `status` (400 unless given)."""

    def __init__(self, message: str, status: int = http.HTTPStatus.BAD_REQUEST):
        super().__init__(message)
        self.status = int(status)


class ExploreServer(ThreadingHTTPServer):
    """The explorer's server, bound to `host:port` when made (port 0: a free port).

    `explorer` answers the API (`info()`, `sample_png(**kwargs)`,
    `interpolation_png(**kwargs)`, `close()`); it may be set after the server is made, so a
    program can claim its port before spending seconds loading a model. Serve with
    `serve_forever()` (the program) or `start()` (a background thread, for tests and
    notebooks); `close()` stops serving, frees the port and closes the explorer.
    """

    daemon_threads = True  # a client that never finishes its request cannot block exit
    allow_reuse_address = True  # a restarted program gets its port back at once

    def __init__(self, host: str = "127.0.0.1", port: int = 8000, explorer=None):
        super().__init__((host, port), _Handler)
        self.explorer = explorer
        self._thread = None
        # Read once: the files are small and a request should not touch the disk.
        folder = importlib.resources.files("tf_biggan") / "explore_static"
        self._static = {
            route: ((folder / name).read_bytes(), content_type)
            for route, (name, content_type) in _STATIC.items()
        }

    @property
    def url(self) -> str:
        """The page's address, `http://HOST:PORT/` (the bound port, also for port 0)."""
        host, port = self.server_address[:2]
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/"

    def start(self) -> ExploreServer:
        """Serves in a daemon thread and returns at once; `close()` stops it."""
        if self.explorer is None:
            raise ValueError("set the server's explorer before serving")
        self._thread = threading.Thread(
            target=self.serve_forever, name="tf-biggan-explore-http", daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        """Stops serving (waiting for `serve_forever` to return), frees the port and closes
        the explorer: it finishes its current batch and drops the requests still queued."""
        if self._thread is not None:
            self.shutdown()
            self._thread.join()
            self._thread = None
        self.server_close()
        if self.explorer is not None:
            self.explorer.close()

    def answer(self, target: str) -> tuple[int, str, bytes]:
        """The response to `GET target` (e.g. "/api/info"): `(status, content_type, body)`.
        Errors are JSON bodies `{"error": message}`."""
        url = urlsplit(target)
        try:
            if url.path in self._static:
                return (http.HTTPStatus.OK, *reversed(self._static[url.path]))
            query = parse_qs(url.query, keep_blank_values=True)
            if url.path == "/api/info":
                _keyword_arguments(query, {})
                body = json.dumps(self.explorer.info()).encode()
                return http.HTTPStatus.OK, "application/json", body
            if url.path == "/api/sample.png":
                png = self.explorer.sample_png(**_keyword_arguments(query, _SAMPLE_PARAMETERS))
                return http.HTTPStatus.OK, "image/png", png
            if url.path == "/api/interpolate.png":
                kwargs = _keyword_arguments(query, _INTERPOLATE_PARAMETERS)
                return http.HTTPStatus.OK, "image/png", self.explorer.interpolation_png(**kwargs)
            raise BadRequest(f"no such page: {url.path}", http.HTTPStatus.NOT_FOUND)
        except BadRequest as error:
            return error.status, "application/json", _error_body(str(error))
        except Exception:
            logging.exception("tf-biggan-explore: GET %s failed", target)
            message = "internal error: the server's log has the traceback"
            return http.HTTPStatus.INTERNAL_SERVER_ERROR, "application/json", _error_body(message)


def _error_body(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


def _keyword_arguments(query: dict[str, list[str]], parameters: dict) -> dict:
    """The explorer's keyword arguments from a parsed query string: only the parameters
    given, each read as its kind says ("int", "float", "str", or "list": every value of a
    repeated parameter, in order).

    Raises:
      BadRequest: an unknown parameter (with the nearest known names), a single-valued one
        given twice, or a value that is not a number where one is needed.
    """
    kwargs = {}
    for name, values in query.items():
        if name not in parameters:
            known = sorted(parameters)
            near = difflib.get_close_matches(name, known, n=1)
            hint = f"did you mean {near[0]!r}? " if near else ""
            listing = ", ".join(known) if known else "none"
            raise BadRequest(f"unknown parameter {name!r}: {hint}parameters here: {listing}")
        keyword, kind = parameters[name]
        if kind == "list":
            kwargs[keyword] = list(values)
            continue
        if len(values) > 1:
            raise BadRequest(f"{name} is given {len(values)} times; give it once")
        kwargs[keyword] = _parse(name, values[0], kind)
    return kwargs


def _parse(name: str, text: str, kind: str):
    if kind == "int":
        try:
            return int(text.strip())
        except ValueError:
            raise BadRequest(f"{name} must be an integer, got {text!r}") from None
    if kind == "float":
        try:
            return float(text.strip())
        except ValueError:
            raise BadRequest(f"{name} must be a number, got {text!r}") from None
    return text


class _Handler(BaseHTTPRequestHandler):
    """One request: `ExploreServer.answer` decides, this writes the response."""

    server_version = "tf-biggan-explore"
    protocol_version = "HTTP/1.1"  # keep-alive: the page's requests reuse one connection

    def do_GET(self):
        self._respond(*self.server.answer(self.path))

    def do_HEAD(self):
        self._respond(*self.server.answer(self.path), send_body=False)

    def _respond(self, status, content_type, body, send_body=True):
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            # Every answer is made for its request: a later run may serve another model.
            self.send_header("Cache-Control", "no-store")
            self.send_header("Content-Security-Policy", _CONTENT_SECURITY_POLICY)
            self.send_header("X-Content-Type-Options", "nosniff")
            self.end_headers()
            if send_body:
                self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            # The client left (the page aborts a picture it no longer wants): nothing to do.
            self.close_connection = True

    def log_message(self, format, *args):
        logging.debug("tf-biggan-explore: %s " + format, self.address_string(), *args)
