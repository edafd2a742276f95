"""sb.commands: shell command lines, run as a login shell would (`bash -l -c CMD`: /etc/profile
sets the pack's PATH), in every pack that has bash; in the foreground (the answer comes once it
exits) or in the background (a handle over the daemon's background-process API)."""
import base64
from dataclasses import fields
from typing import Any, Dict, Literal, NamedTuple, Optional, Union, overload

from .connection import Connection
from .execution import CommandResult, OnText, run_exec, stdin_fields


class Commands:
    def __init__(self, conn: Connection, sandbox_id: str):
        self._conn = conn
        self._id = sandbox_id

    @overload
    def run(self, cmd: str, cwd: Optional[str] = ..., env: Optional[Dict[str, str]] = ..., stdin: Union[str, bytes, None] = ...,
            timeout_ms: Optional[int] = ..., on_stdout: OnText = ..., on_stderr: OnText = ..., background: Literal[False] = ...) -> CommandResult: ...

    @overload
    def run(self, cmd: str, cwd: Optional[str] = ..., env: Optional[Dict[str, str]] = ..., stdin: Union[str, bytes, None] = ...,
            timeout_ms: Optional[int] = ..., on_stdout: OnText = ..., on_stderr: OnText = ..., *, background: Literal[True]) -> "CommandHandle": ...

    def run(
        self,
        cmd: str,
        cwd: Optional[str] = None,
        env: Optional[Dict[str, str]] = None,
        stdin: Union[str, bytes, None] = None,
        timeout_ms: Optional[int] = None,
        on_stdout: OnText = None,
        on_stderr: OnText = None,
        background: bool = False,
    ) -> Union[CommandResult, "CommandHandle"]:
        """Runs ``cmd`` and waits for it. ``cwd`` defaults to /root; ``env`` adds to the sandbox's
        variables; ``stdin`` is fed to it (str as UTF-8, or bytes), else it reads EOF;
        ``timeout_ms`` defaults to the daemon's --exec-timeout (the process group is then killed:
        exit_code 137, timed_out True). With ``on_stdout``/``on_stderr`` the output is also passed
        on as it happens. ``background=True`` answers at once with a CommandHandle (its stdin stays
        open for send_stdin)."""
        body: Dict[str, Any] = {"argv": ["bash", "-l", "-c", cmd], "cwd": cwd, "env": env, "timeout_ms": timeout_ms}
        body.update(stdin_fields(stdin))
        if background:
            if on_stdout is not None or on_stderr is not None:
                raise ValueError("a background command has no callbacks: read its output with handle.output() or handle.wait()")
            body["background"] = True
            a = self._conn.json("POST", self._conn.path("sandboxes", self._id, "exec"), {k: v for k, v in body.items() if v is not None})
            return CommandHandle(self._conn, self._id, a["process_id"])
        x = run_exec(self._conn, self._id, body, on_stdout=on_stdout, on_stderr=on_stderr)
        return CommandResult(**{f.name: getattr(x, f.name) for f in fields(CommandResult)})

    def connect(self, process_id: str) -> "CommandHandle":
        """A handle on a background process started earlier (by its id)."""
        return CommandHandle(self._conn, self._id, process_id)


class Output(NamedTuple):
    stdout: str
    stderr: str


class CommandHandle:
    """A background process: its output so far, its stdin, signals, and its end."""

    def __init__(self, conn: Connection, sandbox_id: str, process_id: str):
        self.id = process_id
        self._conn = conn
        self._sandbox_id = sandbox_id

    def _path(self, *sub: str, **query: Any) -> str:
        return self._conn.path("sandboxes", self._sandbox_id, "processes", self.id, *sub, query=query)

    def info(self) -> Dict[str, Any]:
        """The daemon's view: state (running|exited), exit_code, signal, duration_ms, ..."""
        return self._conn.json("GET", self._path())

    def is_running(self) -> bool:
        return self.info()["state"] == "running"

    def wait(self, poll_ms: int = 30_000) -> CommandResult:
        """Waits until it exits (long polls of at most ``poll_ms``), then answers with all its output."""
        p = self._conn.json("GET", self._path("wait", timeout_ms=poll_ms))
        while p["state"] == "running":
            p = self._conn.json("GET", self._path("wait", timeout_ms=poll_ms))
        out = self.output()
        code = p["exit_code"]
        return CommandResult(stdout=out.stdout, stderr=out.stderr, exit_code=-1 if code is None else code,
                             duration_ms=p["duration_ms"] or 0, timed_out=p["timed_out"], truncated=p["truncated"])

    def output(self) -> Output:
        """Everything it wrote so far (the daemon keeps up to --exec-output-cap of it)."""
        return Output(self._read_all("stdout"), self._read_all("stderr"))

    def send_stdin(self, data: Union[str, bytes, None] = None, eof: bool = False) -> None:
        """Writes to its stdin (str as UTF-8, or bytes); ``eof=True`` then closes it."""
        body: Dict[str, Any] = {"eof": eof} if eof else {}
        if isinstance(data, str):
            body["data"] = data
        elif data is not None:
            body["data_base64"] = base64.b64encode(bytes(data)).decode("ascii")
        self._conn.json("POST", self._path("stdin"), body)

    def kill(self, signal: Union[str, int] = "SIGKILL") -> None:
        """Signals its whole process group; wait() then answers how it ended (128+n)."""
        self._conn.json("POST", self._path("signal"), {"signal": signal})

    def _read_all(self, stream: str) -> str:
        # Read as base64 and decoded once: a character split between two reads stays whole.
        chunks = []
        offset = 0
        while True:
            o = self._conn.json("GET", self._path("output", stream=stream, offset=offset, max_bytes=16 << 20, output_encoding="base64"))
            if o["data"]:
                chunks.append(base64.b64decode(o["data"]))
            if o["eof"] or o["next_offset"] == offset:
                break
            offset = o["next_offset"]
        return b"".join(chunks).decode("utf-8", errors="replace")

    def __repr__(self) -> str:
        return f"CommandHandle(id={self.id!r}, sandbox={self._sandbox_id!r})"
