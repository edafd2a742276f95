"""HTTP to the daemon with the standard library's http.client: one connection per request (the
daemon is local; this keeps a Sandbox usable from several threads), JSON in and out, raw bodies
streamed, and every failure turned into an EmberdError with a stable code."""
import http.client
import json
import socket
from typing import IO, Any, Dict, Mapping, Optional, Union
from urllib.parse import quote, urlencode, urlsplit

from .version import __version__
from .discovery import resolve_token, resolve_url
from .errors import EmberdError

Body = Union[None, bytes, IO[bytes]]

# Connecting is quick or never; an answer may take as long as the daemon lets an exec run (it
# enforces every timeout itself), so reads wait without a limit.
CONNECT_TIMEOUT_S = 10
CHUNK = 64 * 1024


class Connection:
    def __init__(self, url: Optional[str] = None, token: Optional[str] = None):
        self.url = resolve_url(url)
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise EmberdError("INVALID_URL", f"{self.url!r} is not a daemon address: give host:port or http://host:port")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._prefix = parts.path.rstrip("/")
        self._headers = {"user-agent": f"emberd-python/{__version__}"}
        tok = resolve_token(token)
        if tok:
            self._headers["authorization"] = f"Bearer {tok}"

    @staticmethod
    def path(*segments: str, query: Optional[Mapping[str, Any]] = None) -> str:
        """/seg/seg?query with every segment percent-encoded (an id cannot smuggle a path)."""
        p = "".join("/" + quote(s, safe="") for s in segments)
        q = {k: v for k, v in (query or {}).items() if v is not None}
        return p + ("?" + urlencode(q) if q else "")

    def json(self, method: str, path: str, body: Any = None) -> Any:
        """The decoded JSON answer (None for 204); an error answer raises EmberdError."""
        data = None if body is None else json.dumps(body).encode()
        headers = {"content-type": "application/json"} if data is not None else {}
        with self.open(method, path, data, headers) as res:
            text = self._read(res)
        if res.status == 204 or not text:
            return None
        try:
            return json.loads(text)
        except ValueError:
            raise EmberdError("BAD_RESPONSE", f"emberd at {self.url} answered {method} {path} with something that is not JSON: {text[:200]!r}", res.status) from None

    def open(self, method: str, path: str, body: Body = None, headers: Optional[Dict[str, str]] = None) -> "Response":
        """Sends the request and returns the response once its status is a success, for the caller
        to read (a stream, a download) and close; closing early ends the request on the daemon."""
        conn_cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        conn = conn_cls(self._host, self._port, timeout=CONNECT_TIMEOUT_S, blocksize=CHUNK)
        try:
            conn.connect()
        except OSError as e:
            conn.close()
            raise EmberdError(
                "DAEMON_UNREACHABLE",
                f"cannot reach emberd at {self.url} ({_reason(e)}); is the daemon running? Start it with `emberd` "
                "(scripts/up in a checkout), or point EMBERD_URL / EMBERD_ADDR at the one that runs",
            ) from None
        conn.sock.settimeout(None)
        all_headers = {**self._headers, **(headers or {})}
        chunked = body is not None and not isinstance(body, (bytes, bytearray, memoryview)) and "content-length" not in all_headers
        try:
            try:
                conn.request(method, self._prefix + path, body=body, headers=all_headers, encode_chunked=chunked)
            except OSError:
                # The daemon may answer before it has read the whole body (an upload over its
                # --max-upload) and then stop reading: its answer says why, if it can still be read.
                pass
            res = conn.getresponse()
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            raise _lost(self.url, "during", f"{method} {path}", e) from None
        answer = Response(res, conn, self.url, f"{method} {path}")
        if res.status >= 400:
            with answer:
                raise _error_of(res, self._read(answer))
        return answer

    def _read(self, res: "Response") -> str:
        return res.read().decode("utf-8", errors="replace")


class Response:
    """A successful answer being read. close() closes the connection itself, which is what tells
    the daemon a streamed exec's reader left (it then kills the process)."""

    def __init__(self, res: http.client.HTTPResponse, conn: http.client.HTTPConnection, url: str, what: str):
        self._res = res
        self._conn = conn
        self._url = url
        self._what = what
        self.status = res.status

    def header(self, name: str) -> Optional[str]:
        return self._res.getheader(name)

    def read(self, n: int = -1) -> bytes:
        try:
            return self._res.read(n) if n >= 0 else self._res.read()
        except (OSError, http.client.HTTPException) as e:
            raise _lost(self._url, "reading the answer to", self._what, e) from None

    def readline(self) -> bytes:
        try:
            return self._res.readline()
        except (OSError, http.client.HTTPException) as e:
            raise _lost(self._url, "reading the answer to", self._what, e) from None

    def close(self) -> None:
        self._res.close()
        self._conn.close()

    def __enter__(self) -> "Response":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _reason(e: BaseException) -> str:
    if isinstance(e, socket.timeout):
        return f"no answer within {CONNECT_TIMEOUT_S} s"
    return getattr(e, "strerror", None) or str(e) or type(e).__name__


def _lost(url: str, during: str, what: str, e: BaseException) -> EmberdError:
    return EmberdError(
        "CONNECTION_LOST",
        f"the connection to emberd at {url} broke {during} {what} ({_reason(e)}); the daemon may have stopped: check that it runs",
    )


def _error_of(res: http.client.HTTPResponse, text: str) -> EmberdError:
    """The daemon's {"error": {"code", "message"}}, or what a non-emberd answer said."""
    rid = res.getheader("x-request-id")
    try:
        err = json.loads(text).get("error") or {}
    except (ValueError, AttributeError):
        err = {}
    if isinstance(err, dict) and isinstance(err.get("code"), str):
        return EmberdError(err["code"], str(err.get("message", "")), res.status, rid)
    return EmberdError("HTTP_ERROR", f"HTTP {res.status} {res.reason}: {text[:200]}", res.status, rid)
