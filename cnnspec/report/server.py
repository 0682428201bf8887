"""``cnnspec serve``: the network page with an editor, on a small local HTTP server (the standard
library's ThreadingHTTPServer).

Endpoints (JSON in and out, UTF-8):

* ``GET /`` — the page (:func:`cnnspec.report.build.page` in editor mode);
* ``GET /api/files`` — the ``.cnn`` files under the folder (``{"files": [...]}``, paths relative
  to it, at most MAX_LISTED, four folders deep);
* ``GET /api/file?path=P`` — ``{"path", "text"}`` of one file;
* ``POST /api/analyse`` ``{"path", "text"[, "network"]}`` — ``{"ok": true, "data", "svg", "note"}``
  (the page's data and drawing of the text's network called ``network``, default the one given to
  ``serve --network``, else the first) or ``{"ok": false, "error": {"message", "file", "line",
  "col", "width", "hint", "rendered"}}``; ``path`` names the file the text is (imports are
  relative to it);
* ``POST /api/save`` ``{"path", "text"}`` — writes a ``.cnn`` file (atomically).

Safety. The server listens on 127.0.0.1 unless told otherwise. Every path a request names is
resolved (symbolic links included) and must lie inside the folder the server was started for,
and so must every file an analysed text imports: nothing outside it is read or written. A
request must name the server by its address in ``Host`` (a page of another site that renames
itself to 127.0.0.1 by DNS rebinding is refused), and a POST must carry ``X-Cnnspec: 1`` and a
JSON body (which a page of another site cannot send without the server's consent). Bodies are
limited to MAX_BODY bytes and files to MAX_FILE; analyses run one at a time.
"""
from __future__ import annotations

import json
import os
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from cnnspec.errors import CnnSpecError

MAX_BODY = 1 << 20                  # bytes of a request body
MAX_FILE = 1 << 20                  # bytes of a file read or written
MAX_LISTED = 500                    # files /api/files lists
MAX_DEPTH = 4                       # folders /api/files descends
EXAMPLE = """network Example {
    input image: 1x28x28

    conv(8, 3x3, pad=same) -> relu -> maxpool(2)
    conv(16, 3x3, pad=same) -> relu -> maxpool(2)
    flatten
    dense(10) -> softmax
}
"""


class Refused(Exception):
    def __init__(self, status: HTTPStatus, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def inside(root: str, relative, *, must_exist: bool = True) -> str:
    """The real path of ``relative`` (a path relative to ``root``, which is a real path), or
    :class:`Refused` when it is absolute, reaches outside ``root`` (``..``, symbolic links) or is
    not a file."""
    if not isinstance(relative, str) or not relative or "\x00" in relative:
        raise Refused(HTTPStatus.BAD_REQUEST, "give a file path relative to the served folder")
    if os.path.isabs(relative) or relative.startswith(("/", "\\")) or (len(relative) > 1 and relative[1] == ":"):
        raise Refused(HTTPStatus.FORBIDDEN, "absolute paths are not served; give a path inside the served folder")
    real = os.path.realpath(os.path.join(root, relative))
    if os.path.commonpath([real, root]) != root:
        raise Refused(HTTPStatus.FORBIDDEN, f"{relative} is outside the served folder")
    if must_exist and not os.path.isfile(real):
        raise Refused(HTTPStatus.NOT_FOUND, f"no file {relative} in the served folder")
    return real


def listing(root: str) -> list:
    """The .cnn files under ``root`` (relative paths, sorted), symbolic links leading out skipped."""
    found = []
    for folder, dirs, files in os.walk(root):
        depth = os.path.relpath(folder, root).count(os.sep) + (folder != root)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and depth < MAX_DEPTH)
        for name in sorted(files):
            if name.endswith(".cnn"):
                path = os.path.join(folder, name)
                real = os.path.realpath(path)
                if os.path.commonpath([real, root]) == root and os.path.isfile(real) and real.endswith(".cnn"):
                    found.append(os.path.relpath(path, root).replace(os.sep, "/"))
                    if len(found) >= MAX_LISTED:
                        return found
    return found


def analyse(root: str, relative, text, network: str | None = None) -> dict:
    """The JSON reply of /api/analyse for ``text`` standing for file ``relative``: its network
    called ``network``, or the first."""
    from cnnspec.lang.imports import IMPORT_ROOT
    from cnnspec.network import loads
    from cnnspec.report.build import drawing, report_data

    if not isinstance(text, str):
        raise Refused(HTTPStatus.BAD_REQUEST, "`text` must be a string")
    if network is not None and not isinstance(network, str):
        raise Refused(HTTPStatus.BAD_REQUEST, "`network` must be a string")
    path = inside(root, relative or "untitled.cnn", must_exist=False)
    token = IMPORT_ROOT.set(root)
    try:
        network = loads(text, file=path, network=network)
        data = report_data(network)
    except CnnSpecError as err:
        return {"ok": False, "error": located(err, root)}
    finally:
        IMPORT_ROOT.reset(token)
    try:
        svg, note = drawing(network)
    except CnnSpecError as err:
        svg, note = None, err.message
    except Exception as err:                       # noqa: BLE001 - dot timed out, crashed, ...
        svg, note = None, f"graphviz failed: {err}"
    return {"ok": True, "data": data, "svg": svg, "note": note}


def located(err: CnnSpecError, root: str) -> dict:
    file = err.file
    if file and os.path.isabs(file):
        file = os.path.relpath(file, root).replace(os.sep, "/")
    rendered = err.render()
    if err.file and file != err.file:
        rendered = rendered.replace(err.file, file)
    return {"message": err.message, "file": file, "line": err.line, "col": err.col, "width": err.width,
            "hint": err.hint, "rendered": rendered}


def save(root: str, relative, text) -> dict:
    if not isinstance(text, str):
        raise Refused(HTTPStatus.BAD_REQUEST, "`text` must be a string")
    path = inside(root, relative, must_exist=False)
    if not path.endswith(".cnn"):
        raise Refused(HTTPStatus.FORBIDDEN, "only .cnn files are written")
    if not os.path.isdir(os.path.dirname(path)):
        raise Refused(HTTPStatus.NOT_FOUND, "no such folder in the served folder")
    data = text.encode("utf-8")
    if len(data) > MAX_FILE:
        raise Refused(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"files are limited to {MAX_FILE:,} bytes")
    tmp = f"{path}.tmp{os.getpid()}.{threading.get_ident()}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError as err:
        raise Refused(HTTPStatus.INTERNAL_SERVER_ERROR, f"cannot write {relative}: {err.strerror or err}") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return {"ok": True, "path": relative, "bytes": len(data)}


class Handler(BaseHTTPRequestHandler):
    server_version = "cnnspec"
    sys_version = ""
    protocol_version = "HTTP/1.1"

    # set by make_server on a subclass
    root: str = ""
    initial: str | None = None
    network: str | None = None
    hosts: frozenset = frozenset()
    lock = threading.Lock()
    quiet = True

    # -- plumbing --------------------------------------------------------------------------------
    def send_body(self, status, body: bytes, content_type: str, close: bool = False) -> None:
        self.send_response(status)
        if close:                                      # an unread body may follow: end the connection
            self.close_connection = True
            self.send_header("Connection", "close")
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Referrer-Policy", "no-referrer")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_json(self, value, status=HTTPStatus.OK, close: bool = False) -> None:
        self.send_body(status, json.dumps(value).encode("utf-8"), "application/json; charset=utf-8", close)

    def refuse(self, status, message) -> None:
        self.send_json({"ok": False, "error": {"message": message, "rendered": f"error: {message}"}}, status,
                       close=self.command == "POST")

    def log_message(self, format, *args) -> None:      # noqa: A002 - the base class's name
        if not self.quiet:
            super().log_message(format, *args)

    def check_host(self) -> None:
        host = (self.headers.get("Host") or "").strip().lower()
        if host not in self.hosts:
            raise Refused(HTTPStatus.FORBIDDEN, "unexpected Host header: open the address cnnspec serve printed")

    def read_json(self) -> dict:
        if self.headers.get("X-Cnnspec") != "1":
            raise Refused(HTTPStatus.FORBIDDEN, "missing X-Cnnspec header")
        if (self.headers.get("Content-Type") or "").split(";")[0].strip().lower() != "application/json":
            raise Refused(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send JSON")
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            raise Refused(HTTPStatus.LENGTH_REQUIRED, "Content-Length required") from None
        if length < 0 or length > MAX_BODY:
            self.discard(length)
            raise Refused(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"requests are limited to {MAX_BODY:,} bytes")
        raw = self.rfile.read(length)
        try:
            value = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise Refused(HTTPStatus.BAD_REQUEST, "the body is not JSON") from None
        if not isinstance(value, dict):
            raise Refused(HTTPStatus.BAD_REQUEST, "send a JSON object")
        return value

    def discard(self, length: int) -> None:
        """Read and drop an oversized body (up to a bound), so that the client, still sending it,
        reads the refusal instead of a reset connection."""
        left = min(max(length, 0), 8 * MAX_BODY)
        while left > 0:
            chunk = self.rfile.read(min(left, 1 << 16))
            if not chunk:
                break
            left -= len(chunk)

    def handle_one(self, action) -> None:
        try:
            self.check_host()
            action()
        except Refused as err:
            self.refuse(err.status, err.message)
        except Exception as err:                       # noqa: BLE001 - a request never stops the server
            self.refuse(HTTPStatus.INTERNAL_SERVER_ERROR, f"internal error: {type(err).__name__}: {err}")

    # -- routes ----------------------------------------------------------------------------------
    def do_GET(self) -> None:
        self.handle_one(self.get)

    def do_HEAD(self) -> None:
        self.handle_one(self.get)

    def do_POST(self) -> None:
        self.handle_one(self.post)

    def get(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/":
            from cnnspec.report.build import page

            body = page(serve=True, extra={"open": self.initial, "example": EXAMPLE}).encode("utf-8")
            self.send_body(HTTPStatus.OK, body, "text/html; charset=utf-8")
        elif url.path == "/api/files":
            self.send_json({"files": listing(self.root)})
        elif url.path == "/api/file":
            query = parse_qs(url.query, keep_blank_values=True)
            relative = (query.get("path") or [""])[0]
            path = inside(self.root, relative)
            if not path.endswith(".cnn"):                 # the real file's name: links included
                raise Refused(HTTPStatus.FORBIDDEN, "only .cnn files are read")
            if os.path.getsize(path) > MAX_FILE:
                raise Refused(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"{relative} is larger than {MAX_FILE:,} bytes")
            try:
                with open(path, encoding="utf-8-sig") as f:
                    text = f.read()
            except UnicodeDecodeError:
                raise Refused(HTTPStatus.UNPROCESSABLE_ENTITY, f"{relative} is not UTF-8 text") from None
            except OSError as err:
                raise Refused(HTTPStatus.FORBIDDEN, f"cannot read {relative}: {err.strerror or err}") from None
            self.send_json({"path": relative, "text": text})
        elif url.path == "/favicon.ico":
            self.send_body(HTTPStatus.NO_CONTENT, b"", "image/x-icon")
        else:
            raise Refused(HTTPStatus.NOT_FOUND, f"nothing at {url.path}")

    def post(self) -> None:
        url = urlsplit(self.path)
        if url.path not in ("/api/analyse", "/api/save"):
            raise Refused(HTTPStatus.NOT_FOUND, f"nothing at {url.path}")
        request = self.read_json()
        with self.lock:                                 # the parser keeps per-parse state
            if url.path == "/api/analyse":
                self.send_json(analyse(self.root, request.get("path"), request.get("text"),
                                        request.get("network", self.network)))
            else:
                self.send_json(save(self.root, request.get("path"), request.get("text")))


def make_server(root=".", initial=None, host: str = "127.0.0.1", port: int = 8000,
                network: str | None = None) -> ThreadingHTTPServer:
    """A server for the files of ``root`` (not started: call ``serve_forever``). ``initial`` is the
    file the page opens, a path inside ``root``; ``network`` the network of a file the page shows
    (default: the first; a request's ``"network"`` overrides it)."""
    root = os.path.realpath(os.fspath(root))
    if not os.path.isdir(root):
        raise CnnSpecError(f"{root} is not a folder")
    relative = None
    if initial is not None:
        real = os.path.realpath(os.fspath(initial))
        if os.path.commonpath([real, root]) != root:
            raise CnnSpecError(f"{initial} is outside the served folder {root}",
                               hint="start cnnspec serve in a folder that holds the file, or give --root")
        if not os.path.isfile(real):
            raise CnnSpecError("no such file", file=os.fspath(initial))
        relative = os.path.relpath(real, root).replace(os.sep, "/")
    handler = type("CnnspecHandler", (Handler,), {"root": root, "initial": relative, "network": network,
                                               "lock": threading.Lock()})
    try:
        server = ThreadingHTTPServer((host, port), handler)
    except OSError as err:
        raise CnnSpecError(f"cannot listen on {host}:{port}: {err.strerror or err}",
                           hint="choose another port with --port (0 picks a free one)") from None
    server.daemon_threads = True
    bound = server.server_address[1]
    names = {host, "127.0.0.1", "localhost"} if host in ("127.0.0.1", "localhost") else {host}
    if host in ("::1", "[::1]"):
        names |= {"[::1]"}
    handler.hosts = frozenset(f"{name}:{bound}" for name in names) | (frozenset(names) if bound == 80 else frozenset())
    return server


def serve(root=".", initial=None, host: str = "127.0.0.1", port: int = 8000, network: str | None = None) -> int:
    server = make_server(root, initial, host, port, network)
    address = server.server_address
    where = f"http://{'127.0.0.1' if host == '127.0.0.1' else host}:{address[1]}/"
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: listening on {host}: other machines can reach this server and read the .cnn files "
              f"of {server.RequestHandlerClass.root}", file=sys.stderr)
    print(f"serving {server.RequestHandlerClass.root} at {where} (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
