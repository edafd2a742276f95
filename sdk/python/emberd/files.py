"""sb.files: the sandbox's filesystem (docs/api.md, "Files"). Paths are absolute paths in the
sandbox; uploads and downloads are raw bodies, never JSON."""
import io
import json
import os
import stat
from dataclasses import dataclass
from typing import IO, List, Optional, Union

from .connection import Connection
from .errors import EmberdError

Data = Union[str, bytes, bytearray, memoryview, IO[bytes]]


@dataclass
class FileEntry:
    """One entry of list() or stat(). ``type``: file, dir, symlink or other; ``mode``: permission
    bits as 4 octal digits ("0644"); ``mtime``: ISO-8601 UTC."""

    name: str
    path: str
    type: str
    size: int
    mode: str
    mtime: str


@dataclass
class WriteInfo:
    """What write() stored: the normalized path and the bytes written."""

    path: str
    size: int


class Files:
    def __init__(self, conn: Connection, sandbox_id: str):
        self._conn = conn
        self._id = sandbox_id

    def _path(self, sub: str = "", **query: object) -> str:
        segs = ["sandboxes", self._id, "files"] + ([sub] if sub else [])
        return self._conn.path(*segs, query=query)

    def write(self, path: str, data: Data, mode: Union[str, int, None] = None) -> WriteInfo:
        """Writes ``data`` (str as UTF-8, bytes, or a binary file object, which is streamed) to
        ``path``, creating its parents; an existing file is replaced atomically. ``mode``: octal
        permission bits ("0755" or 0o755); default: the replaced file's, else 0644."""
        if isinstance(mode, int):
            mode = format(mode, "04o")
        body = data.encode("utf-8") if isinstance(data, str) else bytes(data) if isinstance(data, (bytearray, memoryview)) else data
        headers = {"content-type": "application/octet-stream"}
        size = _remaining(body) if not isinstance(body, bytes) else None
        if size is not None:  # a length lets the daemon refuse an upload over --max-upload at once
            headers["content-length"] = str(size)
        with self._conn.open("PUT", self._path(path=path, mode=mode), body, headers) as res:
            a = json.loads(res.read())
        return WriteInfo(path=a["path"], size=a["size"])

    def read(self, path: str, format: str = "text") -> Union[str, bytes]:
        """The file's content: text (UTF-8; bytes that are not UTF-8 become U+FFFD, as exec output
        does), or with ``format="bytes"`` the exact bytes."""
        if format not in ("text", "bytes"):
            raise ValueError(f'format is "text" or "bytes", not {format!r}')
        with self._conn.open("GET", self._path(path=path)) as res:
            data = res.read()
        return data if format == "bytes" else data.decode("utf-8", errors="replace")

    def list(self, path: str) -> List[FileEntry]:
        """The entries of directory ``path`` (dotfiles included, sorted by name, not recursive)."""
        a = self._conn.json("GET", self._path("list", path=path))
        return [_entry(e) for e in a["entries"]]

    def stat(self, path: str) -> FileEntry:
        """What ``path`` is (a symlink is described itself, not its target)."""
        return _entry(self._conn.json("GET", self._path("stat", path=path)))

    def exists(self, path: str) -> bool:
        try:
            self.stat(path)
            return True
        except EmberdError as e:
            if e.code == "FILE_NOT_FOUND":
                return False
            raise

    def remove(self, path: str, recursive: bool = False) -> None:
        """Deletes a file, a symlink or an empty directory; ``recursive=True`` a directory with its
        contents."""
        self._conn.json("DELETE", self._path(path=path, recursive="true" if recursive else None))


def _remaining(f: IO[bytes]) -> Optional[int]:
    """Bytes left in a regular file from its position; None for anything else (sent chunked)."""
    try:
        st = os.fstat(f.fileno())
        return st.st_size - f.tell() if stat.S_ISREG(st.st_mode) else None
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return None


def _entry(e: dict) -> FileEntry:
    return FileEntry(name=e["name"], path=e["path"], type=e["type"], size=e["size"], mode=e["mode"], mtime=e["mtime"])
