"""Where the daemon is and which token to send, found as emberctl and the TypeScript SDK find them
(src/sdk/client.ts, src/state-dir.ts): the daemon writes its token to a 0600 file in its state dir,
so a local client needs no configuration."""
import os
from typing import Mapping, Optional

from .errors import EmberdError

DEFAULT_ADDR = "127.0.0.1:7777"


def resolve_url(url: Optional[str] = None, env: Mapping[str, str] = os.environ) -> str:
    """The daemon's base URL: ``url``, else EMBERD_URL, else EMBERD_ADDR (the daemon's and emberctl's
    ``--addr``), else 127.0.0.1:7777. Each may be ``host:port`` or an http(s) URL."""
    addr = url or env.get("EMBERD_URL") or env.get("EMBERD_ADDR") or DEFAULT_ADDR
    if "://" not in addr:
        addr = "http://" + addr
    return addr.rstrip("/")


def default_state_dir(env: Mapping[str, str] = os.environ) -> str:
    """/var/lib/emberd as root, else $XDG_STATE_HOME/emberd (~/.local/state/emberd)."""
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return "/var/lib/emberd"
    base = env.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "emberd")


def default_token_file(env: Mapping[str, str] = os.environ) -> str:
    return os.path.join(default_state_dir(env), "token")


def resolve_token(token: Optional[str] = None, env: Mapping[str, str] = os.environ) -> Optional[str]:
    """The bearer token to send: ``token`` ("" sends none), else EMBERD_TOKEN, else the file named
    by EMBERD_TOKEN_FILE (which must be readable), else the default token file when it exists
    (without one, the daemon runs without auth: none is sent)."""
    if token is not None:
        return token or None
    if env.get("EMBERD_TOKEN"):
        return env["EMBERD_TOKEN"]
    named = env.get("EMBERD_TOKEN_FILE")
    path = named or default_token_file(env)
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip() or None
    except OSError as e:
        if named:
            raise EmberdError("TOKEN_UNREADABLE", f"cannot read the token file {named} (EMBERD_TOKEN_FILE): {e.strerror or e}") from None
        return None
