"""sb.commands: shell command lines, run as a login shell would (`bash -l -c CMD`: /etc/profile
sets the pack's PATH), in every pack that has bash."""
from dataclasses import fields
from typing import Dict, Optional, Union

from .connection import Connection
from .execution import CommandResult, OnText, run_exec, stdin_fields


class Commands:
    def __init__(self, conn: Connection, sandbox_id: str):
        self._conn = conn
        self._id = sandbox_id

    def run(
        self,
        cmd: str,
        cwd: Optional[str] = None,
        env: Optional[Dict[str, str]] = None,
        stdin: Union[str, bytes, None] = None,
        timeout_ms: Optional[int] = None,
        on_stdout: OnText = None,
        on_stderr: OnText = None,
    ) -> CommandResult:
        """Runs ``cmd`` and waits for it. ``cwd`` defaults to /root; ``env`` adds to the sandbox's
        variables; ``stdin`` is fed to it (str as UTF-8, or bytes), else it reads EOF;
        ``timeout_ms`` defaults to the daemon's --exec-timeout (the process group is then killed:
        exit_code 137, timed_out True). With ``on_stdout``/``on_stderr`` the output is also passed
        on as it happens."""
        body = {"argv": ["bash", "-l", "-c", cmd], "cwd": cwd, "env": env, "timeout_ms": timeout_ms}
        body.update(stdin_fields(stdin))
        x = run_exec(self._conn, self._id, body, on_stdout=on_stdout, on_stderr=on_stderr)
        return CommandResult(**{f.name: getattr(x, f.name) for f in fields(CommandResult)})

