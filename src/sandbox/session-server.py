# emberd session server: one persistent python interpreter of a sandbox session (docs/api.md,
# "Sessions"; the host side is src/sandbox/sessions.ts, which describes the framing).
#
# Started as `python3 -u -c BOOTSTRAP` by an exec whose stdin first carries this source (the
# bootstrap reads exactly that many bytes), then host->server frames; server->host frames go to
# its stdout. The protocol fds are moved out of 0/1 at once, so nothing the user's code does with
# fds 0-2 (print, input(), subprocesses, threads) can reach or corrupt them.
#
# A frame is b'ES' | type (1 byte) | 0 | length (u32, big-endian) | payload.
#   host -> server  C  JSON {"id", "code", "cap", "stdin"}: run a cell (stdin: base64 or null)
#   server -> host  R  JSON {"pid", "python"}: ready, once, first
#                   O  raw bytes the cell wrote to fd 1 (stdout)
#                   E  raw bytes the cell wrote to fd 2 (stderr)
#                   D  JSON {"id", "exit_code", "value", "interrupted", "truncated", "duration_us"}:
#                      the cell is done; every O/E of the cell came before it
# EOF on stdin ends the server.
import ast
import base64
import builtins
import io
import json
import linecache
import os
import select
import signal
import sys
import threading
import time
import traceback
import types

_SELF = '<emberd-session>'
_PROTO_IN = os.dup(0)   # non-inheritable copies: subprocesses of the user's code never get them
_PROTO_OUT = os.dup(1)
_STDERR = os.dup(2)     # the session exec's own stderr: the server's problems go there
_NULL = os.open(os.devnull, os.O_RDWR)
os.set_inheritable(_NULL, False)
os.dup2(_NULL, 0)
os.dup2(_NULL, 1)       # between cells, stray output (a user's thread) goes nowhere
_write_lock = threading.Lock()
_stdin_like = sys.stdin  # encoding and errors for the per-cell sys.stdin


def _send(kind, payload):
    data = b'ES' + kind + b'\0' + len(payload).to_bytes(4, 'big') + payload
    with _write_lock:
        view = memoryview(data)
        while view:
            n = os.write(_PROTO_OUT, view)
            view = view[n:]


def _read_exact(n):
    buf = bytearray()
    while len(buf) < n:
        chunk = os.read(_PROTO_IN, min(n - len(buf), 1 << 20))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


class _Output:
    """The cell's fds 1 and 2: pipes drained by a thread each, forwarded as O/E frames up to the
    cap (stdout+stderr+value together); beyond it bytes are read and dropped, so writers never
    block on a full pipe."""

    def __init__(self, cap):
        self.cap, self.sent, self.truncated = cap, 0, False
        self.lock = threading.Lock()
        self.wake_r, self.wake_w = os.pipe()
        self.threads = []
        for fd, kind in ((1, b'O'), (2, b'E')):
            r, w = os.pipe()
            os.dup2(w, fd)
            os.close(w)
            t = threading.Thread(target=self._drain, args=(r, kind), daemon=True)
            t.start()
            self.threads.append(t)

    def take(self, n):
        """How many of n more bytes fit under the cap."""
        with self.lock:
            room = n if not self.cap else max(0, min(n, self.cap - self.sent))
            self.sent += room
            if room < n:
                self.truncated = True
            return room

    def _drain(self, fd, kind):
        try:
            stopping = False
            while True:
                if not stopping:
                    ready, _, _ = select.select([fd, self.wake_r], [], [])
                    if fd not in ready:  # the cell is over: take what is in the pipe, then stop
                        stopping = True
                        os.set_blocking(fd, False)
                try:
                    data = os.read(fd, 65536)
                except BlockingIOError:
                    return
                if not data:
                    return
                n = self.take(len(data))
                if n:
                    _send(kind, data[:n])
        finally:
            os.close(fd)  # writers left in the background (a subprocess) get EPIPE from now on

    def close(self):
        for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
            try:
                stream.flush()
            except Exception:
                pass
        os.dup2(_NULL, 1)
        os.dup2(_STDERR, 2)
        # Usually the pipes are at EOF now; a background process of the cell may still hold them.
        deadline = time.monotonic() + 0.05
        for t in self.threads:
            t.join(max(0, deadline - time.monotonic()))
        os.write(self.wake_w, b'x')
        for t in self.threads:
            t.join()
        os.close(self.wake_r)
        os.close(self.wake_w)


class _Input:
    """The cell's fd 0: the request's stdin through a pipe, else /dev/null."""

    def __init__(self, data):
        self.thread = None
        if data:
            r, w = os.pipe()
            os.dup2(r, 0)
            os.close(r)
            self.thread = threading.Thread(target=self._feed, args=(w, data), daemon=True)
            self.thread.start()
        else:
            os.dup2(_NULL, 0)
        # A fresh sys.stdin: nothing buffered from an earlier cell's input leaks into this one.
        sys.stdin = io.TextIOWrapper(io.BufferedReader(io.FileIO(0, 'rb', closefd=False)),
                                     _stdin_like.encoding, _stdin_like.errors, '\n')

    @staticmethod
    def _feed(w, data):
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(w, view):]
        except OSError:
            pass  # the cell closed its stdin, or ended before reading it all
        finally:
            os.close(w)

    def close(self):
        os.dup2(_NULL, 0)
        if self.thread:
            self.thread.join()


_main = types.ModuleType('__main__')
_main.__dict__['__builtins__'] = builtins
sys.modules['__main__'] = _main
_namespace = _main.__dict__
_cells = 0


def _idle_sigint(signo, frame):
    """Between cells a SIGINT (a timeout that came just as the cell ended) is dropped."""


_user_sigint = signal.default_int_handler


def _execute(code, name):
    """Runs a cell like a REPL or notebook: the repr of a final expression is its value."""
    linecache.cache[name] = (len(code), None, code.splitlines(True), name)  # tracebacks show lines
    tree = ast.parse(code, name, 'exec')
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = ast.Expression(tree.body.pop().value)
    if tree.body:
        exec(compile(tree, name, 'exec'), _namespace)
    if last is not None:
        result = eval(compile(last, name, 'eval'), _namespace)
        if result is not None:
            builtins._ = result
            return repr(result)
    return None


def _report(e):
    """The traceback as the REPL prints it, without the server's own frames."""
    tb = e.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == _SELF:
        tb = tb.tb_next
    e.__traceback__ = tb
    try:
        if sys.excepthook is sys.__excepthook__:
            traceback.print_exception(e)  # unlike the built-in hook, it shows the cells' lines
        else:
            sys.excepthook(type(e), e, tb)
    except BaseException:
        pass


def _run_cell(req):
    global _cells, _user_sigint
    _cells += 1
    out = _Output(int(req.get('cap') or 0))
    inp = _Input(base64.b64decode(req['stdin']) if req.get('stdin') else b'')
    status, value, interrupted = 0, None, False
    start = time.perf_counter_ns()
    try:
        try:
            signal.signal(signal.SIGINT, _user_sigint)
            value = _execute(req['code'], f'<cell {_cells}>')
        finally:
            _user_sigint = signal.signal(signal.SIGINT, _idle_sigint)
    except SystemExit as e:  # the session survives; the status is what a process would exit with
        if e.code is None:
            status = 0
        elif isinstance(e.code, int):
            status = e.code & 0xff
        else:
            print(e.code, file=sys.stderr)
            status = 1
    except KeyboardInterrupt as e:
        _report(e)
        status, interrupted = 130, True
    except BaseException as e:
        _report(e)
        status = 1
    if signal.getsignal(signal.SIGINT) is not _idle_sigint:
        _user_sigint = signal.signal(signal.SIGINT, _idle_sigint)
    duration = (time.perf_counter_ns() - start) // 1000
    e = None
    inp.close()
    out.close()
    if value is not None:
        raw = value.encode('utf-8', 'surrogateescape')
        n = out.take(len(raw))
        value = raw[:n].decode('utf-8', 'ignore')
    _send(b'D', json.dumps({
        'id': req.get('id'), 'exit_code': status, 'value': value, 'interrupted': interrupted,
        'truncated': out.truncated, 'duration_us': duration,
    }).encode())


def _serve():
    signal.signal(signal.SIGINT, _idle_sigint)
    _send(b'R', json.dumps({'pid': os.getpid(), 'python': sys.version.split()[0]}).encode())
    while True:
        header = _read_exact(8)
        if header is None:
            return
        if header[:2] != b'ES':
            raise SystemExit('emberd session: bad frame from the host')
        payload = _read_exact(int.from_bytes(header[4:8], 'big'))
        if payload is None:
            return
        if header[2:3] == b'C':
            try:
                req = json.loads(payload)
            except ValueError:
                raise SystemExit('emberd session: bad request from the host')
            _run_cell(req)


_serve()
os._exit(0)
