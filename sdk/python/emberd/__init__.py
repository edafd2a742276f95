"""Python SDK for emberd, the local daemon that runs AI-agent code in microVMs.

    from emberd import Sandbox

    with Sandbox.create(pack="python") as sb:
        print(sb.run_code("print(6 * 7)").stdout)

Standard library only. The daemon is found at EMBERD_URL (or EMBERD_ADDR), else 127.0.0.1:7777;
its token, when it runs with --auth on, is read from EMBERD_TOKEN or the daemon's token file.
"""
from .errors import EmberdError
from .commands import CommandHandle
from .execution import CommandResult, Execution
from .files import FileEntry, WriteInfo
from .sandbox import Sandbox
from .version import __version__

__all__ = ["Sandbox", "EmberdError", "Execution", "CommandResult", "CommandHandle", "FileEntry", "WriteInfo", "__version__"]
