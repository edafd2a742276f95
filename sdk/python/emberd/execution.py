"""What an exec answers (docs/api.md, "POST /sandboxes/{id}/exec"), whole or streamed: with a
callback the exec is read as NDJSON events as they happen (Accept: application/x-ndjson), and
the same result object is folded from them."""
import base64
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Union

from .connection import Connection
from .errors import EmberdError

OnText = Optional[Callable[[str], Any]]
OnResult = Optional[Callable[[Dict[str, Any]], Any]]


@dataclass
class CommandResult:
    """A finished process. A non-zero ``exit_code`` is a normal result, not an exception;
    128+n when signal n killed it (137 after a timeout, with ``timed_out``). ``truncated``: output
    beyond the daemon's --exec-output-cap was dropped."""

    stdout: str
    stderr: str
    exit_code: int
    duration_ms: int
    timed_out: bool
    truncated: bool


@dataclass
class Execution(CommandResult):
    """A finished run_code. In a session: ``value`` is the repr of the cell's final expression
    (None when it ends with a statement or the value is None) and ``results`` the cell's rich
    outputs in order (display(), matplotlib figures, the final value), each a MIME bundle dict
    such as ``{"text/plain": "...", "text/html": "...", "is_main_result": False}`` (binary types,
    e.g. image/png, are base64 text). ``session_reset``: the interpreter died and the next call
    starts a new one."""

    results: List[Dict[str, Any]] = field(default_factory=list)
    value: Optional[str] = None
    session_reset: bool = False

    @property
    def main_result(self) -> Optional[Dict[str, Any]]:
        """The bundle of the final expression's value, if any."""
        return next((r for r in self.results if r.get("is_main_result")), None)


def stdin_fields(stdin: Union[str, bytes, None]) -> Dict[str, str]:
    """The exec body's stdin: text as it is, bytes as base64."""
    if stdin is None:
        return {}
    if isinstance(stdin, str):
        return {"stdin": stdin}
    return {"stdin_base64": base64.b64encode(bytes(stdin)).decode("ascii")}


def run_exec(conn: Connection, sandbox_id: str, body: Dict[str, Any], on_stdout: OnText = None, on_stderr: OnText = None, on_result: OnResult = None) -> Execution:
    """One exec: a plain request, or a streamed one when any callback is given."""
    path = conn.path("sandboxes", sandbox_id, "exec")
    body = {k: v for k, v in body.items() if v is not None}
    if on_stdout is None and on_stderr is None and on_result is None:
        a = conn.json("POST", path, body)
        return Execution(
            stdout=a["stdout"], stderr=a["stderr"], exit_code=a["exit_code"], duration_ms=a["duration_ms"],
            timed_out=a["timed_out"], truncated=a["truncated"], results=list(a.get("results") or []),
            value=a.get("value"), session_reset=bool(a.get("session_reset", False)),
        )
    out: List[str] = []
    err: List[str] = []
    results: List[Dict[str, Any]] = []
    headers = {"content-type": "application/json", "accept": "application/x-ndjson"}
    # Leaving early (a callback raised, KeyboardInterrupt) closes the connection: the daemon then
    # kills the process, or interrupts the session cell.
    with conn.open("POST", path, json.dumps(body).encode(), headers) as res:
        while True:
            line = res.readline()
            if not line:
                raise EmberdError("CONNECTION_LOST", f"the exec's event stream from {conn.url} ended before its exit event; the daemon may have stopped: check that it runs")
            if not line.strip():
                continue
            e = json.loads(line)
            kind = e.pop("type", None)
            if kind == "stdout":
                out.append(e["data"])
                if on_stdout:
                    on_stdout(e["data"])
            elif kind == "stderr":
                err.append(e["data"])
                if on_stderr:
                    on_stderr(e["data"])
            elif kind == "result":
                results.append(e)
                if on_result:
                    on_result(e)
            elif kind == "exit":
                return Execution(
                    stdout="".join(out), stderr="".join(err), exit_code=e["exit_code"], duration_ms=e["duration_ms"],
                    timed_out=e["timed_out"], truncated=e["truncated"], results=results,
                    value=e.get("value"), session_reset=bool(e.get("session_reset", False)),
                )
            elif kind == "error":
                # Answered after the stream started (the HTTP status was already 200): status 0.
                raise EmberdError(e.get("code", "INTERNAL"), e.get("message", ""))
