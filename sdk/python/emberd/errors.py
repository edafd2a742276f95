"""The one error class of the SDK: what the daemon answered, or why it could not be asked."""
from typing import Optional


class EmberdError(Exception):
    """An error from emberd. Match on ``code`` (stable, as in docs/api.md); show ``message`` (it
    says what to do). ``status`` is the HTTP status, 0 when no answer came (``DAEMON_UNREACHABLE``,
    ``TOKEN_UNREADABLE``, ``BAD_RESPONSE``)."""

    def __init__(self, code: str, message: str, status: int = 0, request_id: Optional[str] = None):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status
        #: X-Request-Id of the answer: the req_id of the daemon's log line for the request.
        self.request_id = request_id

    def __reduce__(self):  # pickles whole (multiprocessing, concurrent.futures)
        return (type(self), (self.code, self.message, self.status, self.request_id))

    def __repr__(self) -> str:
        return f"EmberdError(code={self.code!r}, status={self.status}, message={self.message!r})"


EmberdError.__module__ = "emberd"  # tracebacks say emberd.EmberdError, the name users import
