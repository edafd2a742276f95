"""Sandbox: one microVM on an emberd daemon, and the ways to get one (create, connect, list)."""
from typing import Any, Dict, List, Optional, Union

from .commands import Commands
from .connection import Connection
from .errors import EmberdError
from .execution import Execution, OnResult, OnText, run_exec, stdin_fields
from .files import Files


class Sandbox:
    """A sandbox: ``with Sandbox.create() as sb:`` kills it when the block ends. Every method is
    one request to the daemon; the object holds no state beyond the id, so one sandbox may be used
    from several Sandbox objects, processes or threads."""

    def __init__(self, info: Dict[str, Any], conn: Connection):
        self.id: str = info["id"]
        #: The daemon's summary of the sandbox as last seen (state, language_pack, vcpus,
        #: memory_mib, env, expires_at, on_timeout, auto_resume, paused, forked_from, ...; docs/api.md).
        self.info: Dict[str, Any] = info
        self.commands = Commands(conn, self.id)
        self.files = Files(conn, self.id)
        self._conn = conn

    @property
    def pack(self) -> str:
        """Its language pack."""
        return self.info["language_pack"]

    # ---- getting one ----

    @classmethod
    def create(
        cls,
        pack: Optional[str] = "python",
        vcpus: Optional[int] = None,
        memory_mib: Optional[int] = None,
        timeout_s: Optional[int] = None,
        env: Optional[Dict[str, str]] = None,
        url: Optional[str] = None,
        token: Optional[str] = None,
        disk_mib: Optional[int] = None,
        pids_max: Optional[int] = None,
        on_timeout: Optional[str] = None,
        auto_resume: Optional[bool] = None,
    ) -> "Sandbox":
        """Boots a sandbox of language pack ``pack`` (None: the daemon's default) and returns once
        it serves. Unset options take the daemon's defaults: ``timeout_s`` (seconds until the daemon
        destroys it; 3600), ``vcpus``, ``memory_mib``, ``disk_mib``, ``pids_max``; ``env``: variables
        every exec inherits; ``on_timeout``: what its deadline does, ``"destroy"`` (the default) or
        ``"pause"`` (kept on disk, resumable); ``auto_resume=False``: calls on it while it is paused
        fail with SANDBOX_PAUSED instead of resuming it. ``url`` and ``token``: see the package docs
        (EMBERD_URL, the token file)."""
        conn = Connection(url, token)
        body = {
            "language_pack": pack, "vcpus": vcpus, "memory_mib": memory_mib, "timeout_s": timeout_s,
            "env": env, "disk_mib": disk_mib, "pids_max": pids_max, "on_timeout": on_timeout, "auto_resume": auto_resume,
        }
        return cls(conn.json("POST", "/sandboxes", {k: v for k, v in body.items() if v is not None}), conn)

    @classmethod
    def connect(cls, sandbox_id: str, url: Optional[str] = None, token: Optional[str] = None) -> "Sandbox":
        """The running sandbox ``sandbox_id`` (EmberdError SANDBOX_NOT_FOUND if there is none)."""
        conn = Connection(url, token)
        return cls(conn.json("GET", conn.path("sandboxes", sandbox_id)), conn)

    @classmethod
    def list(cls, url: Optional[str] = None, token: Optional[str] = None) -> List["Sandbox"]:
        """Every sandbox of the daemon (failed ones included until they are killed)."""
        conn = Connection(url, token)
        return [cls(info, conn) for info in conn.json("GET", "/sandboxes")["sandboxes"]]

    # ---- using it ----

    def run_code(
        self,
        code: str,
        session: Optional[str] = None,
        on_stdout: OnText = None,
        on_stderr: OnText = None,
        on_result: OnResult = None,
        timeout_ms: Optional[int] = None,
        env: Optional[Dict[str, str]] = None,
        cwd: Optional[str] = None,
        stdin: Union[str, bytes, None] = None,
    ) -> Execution:
        """Runs ``code`` with the pack's interpreter (``python3 -c``, ``sh -c``, ...) and waits.
        With ``session`` (a name; python pack) it runs in that persistent interpreter, created on
        first use: variables survive between calls, the final expression is ``value`` and rich
        outputs are ``results``. ``on_stdout``/``on_stderr`` get output text and ``on_result``
        each rich output as it happens (the exec is then streamed); an exception in a callback
        stops the code. ``timeout_ms``: default the daemon's --exec-timeout (a session cell is then
        interrupted as by Ctrl-C)."""
        body: Dict[str, Any] = {"code": code, "session": session, "timeout_ms": timeout_ms, "env": env, "cwd": cwd}
        body.update(stdin_fields(stdin))
        return run_exec(self._conn, self.id, body, on_stdout=on_stdout, on_stderr=on_stderr, on_result=on_result)

    def set_timeout(self, timeout_s: int) -> None:
        """The daemon destroys the sandbox ``timeout_s`` seconds from now (instead of its previous
        deadline)."""
        self.info = self._conn.json("POST", self._conn.path("sandboxes", self.id, "timeout"), {"timeout_s": timeout_s})

    def pause(self) -> Dict[str, Any]:
        """Saves the whole sandbox (memory, files, sessions, background processes) to the daemon's
        disk and ends its VM: no CPU or memory until it resumes, on ``resume()`` or (unless created
        with ``auto_resume=False``) on the next call. Returns the summary: state ``"paused"``,
        ``paused`` = {paused_at, bytes, pause_ms, expires_at}. SANDBOX_BUSY while an exec, a session
        cell or a file transfer runs in it; a paused one is returned as it is."""
        self.info = self._conn.json("POST", self._conn.path("sandboxes", self.id, "pause"))
        return self.info

    def resume(self, timeout_s: Optional[int] = None) -> Dict[str, Any]:
        """Brings a paused sandbox back as it was; ``timeout_s`` gives it a new lifetime from now
        (else the one it had). A running sandbox is returned as it is. Returns the summary."""
        body = {} if timeout_s is None else {"timeout_s": timeout_s}
        self.info = self._conn.json("POST", self._conn.path("sandboxes", self.id, "resume"), body)
        return self.info

    def fork(self, count: int = 1) -> List["Sandbox"]:
        """``count`` (1-16) new sandboxes, each starting from this one's state now (memory, files,
        sessions, background processes) and independent afterwards; this one goes on running. Kill
        each when done (they are not killed with this one)."""
        answer = self._conn.json("POST", self._conn.path("sandboxes", self.id, "fork"), {"count": count})
        return [Sandbox(info, self._conn) for info in answer["sandboxes"]]

    # ---- ports: a server in the sandbox reached through the daemon (no network device) ----

    def expose_port(self, port: int, tcp: Optional[bool] = None) -> Dict[str, Any]:
        """Exposes the sandbox's TCP ``port`` (the server need not listen yet; an exposed one is
        returned as it is): {port, url, path, host, created_at, connections, connections_total,
        bytes_in, bytes_out}. ``url`` (``http://127.0.0.1:7777/sandboxes/{id}/ports/8000/``) is
        where the server's ``/`` is fetched, HTTP and WebSockets, the daemon's auth applying.
        ``tcp=True`` also opens a plain 127.0.0.1 listener (``host``, which checks no token;
        default: only when the daemon runs without auth). TOO_MANY_PORTS past 32."""
        body: Dict[str, Any] = {"port": port}
        if tcp is not None:
            body["tcp"] = tcp
        return self._conn.json("POST", self._conn.path("sandboxes", self.id, "ports"), body)

    def list_ports(self) -> List[Dict[str, Any]]:
        """The exposed ports (as expose_port returns them) by port number, with their counters."""
        return self._conn.json("GET", self._conn.path("sandboxes", self.id, "ports"))["ports"]

    def get_port(self, port: int) -> Dict[str, Any]:
        """One exposed port; EmberdError PORT_NOT_FOUND if it is not exposed."""
        return self._conn.json("GET", self._conn.path("sandboxes", self.id, "ports", str(port)))

    def close_port(self, port: int) -> bool:
        """Closes the port and every connection through it. True if this closed it, False if it
        was not exposed."""
        try:
            self._conn.json("DELETE", self._conn.path("sandboxes", self.id, "ports", str(port)))
            return True
        except EmberdError as e:
            if e.code == "PORT_NOT_FOUND":
                return False
            raise

    def get_host(self, port: int) -> str:
        """The URL to fetch the server on ``port`` at, exposing the port first if needed: the
        ``url`` of expose_port. Unlike E2B's get_host (a host name without scheme), a whole
        ``http://`` URL, usable with urllib as it is (with the daemon's token under --auth on)."""
        return self.expose_port(port)["url"]

    def get_info(self) -> Dict[str, Any]:
        """The daemon's details now: the summary plus ready_at, vmm_pid, error, boot_log_tail."""
        details = self._conn.json("GET", self._conn.path("sandboxes", self.id))
        self.info = details
        return details

    def is_running(self) -> bool:
        try:
            return self.get_info()["state"] == "ready"
        except EmberdError as e:
            if e.code == "SANDBOX_NOT_FOUND":
                return False
            raise

    def kill(self) -> bool:
        """Ends the VM and everything in it. True if this ended it, False if it was gone already."""
        try:
            self._conn.json("DELETE", self._conn.path("sandboxes", self.id))
            return True
        except EmberdError as e:
            if e.code == "SANDBOX_NOT_FOUND":
                return False
            raise

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()

    def __repr__(self) -> str:
        return f"Sandbox(id={self.id!r}, pack={self.pack!r}, url={self._conn.url!r})"
