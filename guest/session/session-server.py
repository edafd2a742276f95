# emberd session server: one persistent python interpreter of a sandbox session. It runs in the
# guest; the host side is src/sandbox/sessions.ts, the framing is docs/protocol.md, "Sessions".
#
# Started as `python3 -u -c BOOTSTRAP` by an exec whose stdin first carries this source (the
# bootstrap reads exactly that many bytes), then host->server frames; server->host frames go to
# its stdout. Two processes, so that no output is lost when the interpreter dies (os._exit, a
# crash, a signal) with bytes still in its pipes:
#   pump         this process. Speaks the protocol, holds the read ends of each cell's stdout and
#                stderr pipes, forwards what they carry, and outlives the interpreter: once it is
#                gone, the pump drains what it wrote, then answers X. Ignores SIGINT (the host
#                interrupts a cell with SIGINT to the session's whole process group).
#   interpreter  a fork of the pump. Runs every cell in one namespace, with fds 1 and 2 on the
#                cell's pipes and fd 0 on the cell's stdin or /dev/null, so nothing the user's
#                code does with fds 0-2 (print, input(), subprocesses, threads) reaches the protocol.
#
# A frame is b'ES' | type (1 byte) | 0 | length (u32, big-endian) | payload.
#   host -> server  C  JSON {"id", "code", "cap", "stdin"}: run a cell (stdin: base64 or null)
#                   K  empty: kill the interpreter now (a cell that ignored the interrupt); X follows
#                   S  empty: reseed the interpreter's `random` module (if imported) from the
#                      kernel's entropy before the next cell: the host sends it first to each
#                      session of a forked sandbox, whose interpreter state is the parent's
#   server -> host  R  JSON {"pid", "python"}: ready, once, first (pid: the interpreter's)
#                   O  raw bytes the cell wrote to fd 1 (stdout)
#                   E  raw bytes the cell wrote to fd 2 (stderr)
#                   B  JSON MIME bundle {"<mime type>": data, ..., "is_main_result"}: a rich output of
#                      the cell (display(), a matplotlib figure, the final expression's value), in
#                      order with the O/E before it
#                   D  JSON {"id", "exit_code", "value", "interrupted", "truncated", "duration_us"}:
#                      the cell is done; every O/E/B of the cell came before it
#                   X  JSON {"exit_code", "signal", "duration_us"}: the interpreter ended and its
#                      state is lost; every O/E it wrote came before it. The last frame.
# Between the pump and the interpreter (a socketpair): the same frames; a C carries the write ends
# of the cell's two pipes as SCM_RIGHTS on its first byte (an S carries none). For each B the pump first forwards what
# the pipes hold (the interpreter flushed its prints before it), then the B, then answers the
# interpreter A, which display() waits for: so bundles keep their place among the cell's writes. EOF on stdin ends the server and every
# process the session started.
import ast
import base64
import builtins
import fcntl
import io
import json
import linecache
import os
import select
import signal
import socket
import sys
import termios
import threading
import time
import traceback
import types

_SELF = '<emberd-session>'
_HEADER = 8
# After a cell ends or the interpreter dies, a background process of the cell may still hold its
# pipes: what is in them then is read in full, anything later only for this long.
_LINGER_S = 0.05

_PROTO_IN = os.dup(0)   # non-inheritable copies: subprocesses of the user's code never get them
_PROTO_OUT = os.dup(1)
_STDERR = os.dup(2)     # the session exec's own stderr: the server's problems go there
_NULL = os.open(os.devnull, os.O_RDWR)
os.set_inheritable(_NULL, False)
os.dup2(_NULL, 0)
os.dup2(_NULL, 1)       # between cells, stray output (a user's thread) goes nowhere


def _frame(kind, payload=b''):
    return b'ES' + kind + b'\0' + len(payload).to_bytes(4, 'big') + payload


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class _Frames:
    """Splits a byte stream into (type, payload) frames."""

    def __init__(self, what):
        self.what, self.buf = what, bytearray()

    def feed(self, data):
        self.buf += data
        while len(self.buf) >= _HEADER:
            if self.buf[:2] != b'ES':
                raise SystemExit(f'emberd session: bad frame from {self.what}')
            n = int.from_bytes(self.buf[4:8], 'big')
            if len(self.buf) < _HEADER + n:
                return
            kind, payload = bytes(self.buf[2:3]), bytes(self.buf[_HEADER:_HEADER + n])
            del self.buf[:_HEADER + n]
            yield kind, payload


# ---- the pump ----------------------------------------------------------------------------------

def _pending(fd):
    """Bytes waiting in a pipe."""
    return int.from_bytes(fcntl.ioctl(fd, termios.FIONREAD, b'\0\0\0\0'), sys.byteorder)


class _Cell:
    """The pump's view of the cell in progress: its pipes and what it may still send."""

    def __init__(self, req, out_r, err_r):
        self.cap = int(req.get('cap') or 0)
        self.sent, self.truncated = 0, False
        self.pipes = {out_r: b'O', err_r: b'E'}
        self.owed = {}        # pipe -> bytes it held when the cell ended: read whatever happens
        self.until = None     # then read until EOF or this monotonic time
        self.done = None      # the interpreter's D, held until the pipes are drained

    def take(self, n):
        """How many of n more bytes fit under the cap (stdout + stderr + bundles + value together)."""
        room = n if not self.cap else max(0, min(n, self.cap - self.sent))
        self.sent += room
        if room < n:
            self.truncated = True
        return room

    def take_whole(self, n):
        """Whether all of n bytes fit under the cap (a bundle is sent whole or not at all)."""
        if self.cap and self.sent + n > self.cap:
            self.truncated = True
            return False
        self.sent += n
        return True

    def bundle(self, payload):
        """A B from the interpreter: after what the pipes hold now (written before it), if it fits."""
        for fd in list(self.pipes):
            left = _pending(fd)  # not more: a background writer may never stop
            while left > 0 and fd in self.pipes:
                n = self.read(fd, min(left, 65536))
                if not n:
                    break
                left -= n
        if self.take_whole(len(payload)):
            _write_all(_PROTO_OUT, _frame(b'B', payload))

    def ending(self):
        """The cell is over (D came, or the interpreter died): drain, then stop reading."""
        if self.until is None:
            self.owed = {fd: _pending(fd) for fd in self.pipes}
            self.until = time.monotonic() + _LINGER_S

    def read(self, fd, most=65536):
        """Forwards what one read of the pipe gives; its length (0 at EOF, which closes it)."""
        try:
            data = os.read(fd, most)
        except BlockingIOError:
            return 0  # select said readable, but a bundle's drain took it all since
        if fd in self.owed:
            self.owed[fd] -= len(data)
        if not data:
            self.close(fd)
            return 0
        n = self.take(len(data))
        if n:
            _write_all(_PROTO_OUT, _frame(self.pipes[fd], data[:n]))
        return len(data)

    def expire(self):
        """Stops reading pipes whose owed bytes are read once the linger time is over."""
        if self.until is not None and time.monotonic() >= self.until:
            for fd in [fd for fd in self.pipes if self.owed.get(fd, 0) <= 0]:
                self.close(fd)

    def close(self, fd):
        del self.pipes[fd]
        os.close(fd)  # a background writer still holding the pipe gets EPIPE from now on

    def timeout(self):
        if self.until is None or any(self.owed.get(fd, 0) > 0 for fd in self.pipes):
            return None
        return max(0.0, self.until - time.monotonic())


def _pump(child, sock):
    """Runs until the host ends the session or the interpreter died; True if it was reaped."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    pidfd = os.pidfd_open(child)
    from_host, from_interp = _Frames('the host'), _Frames('the interpreter')
    cell, status, started, interp_open = None, None, time.monotonic(), True
    while True:
        if cell and (cell.done is not None or status is not None):
            cell.ending()
            cell.expire()
            if not cell.pipes:
                if cell.done is not None:
                    d = json.loads(cell.done)
                    if d.get('value') is not None:  # the value counts against the cap too
                        raw = d['value'].encode('utf-8', 'surrogateescape')
                        d['value'] = raw[:cell.take(len(raw))].decode('utf-8', 'ignore')
                    d['truncated'] = d.get('truncated') or cell.truncated
                    _write_all(_PROTO_OUT, _frame(b'D', json.dumps(d).encode()))
                cell = None
        if status is not None and cell is None:
            code = os.waitstatus_to_exitcode(status)
            _write_all(_PROTO_OUT, _frame(b'X', json.dumps({
                'exit_code': code if code >= 0 else 128 - code, 'signal': max(0, -code),
                'duration_us': int((time.monotonic() - started) * 1e6),
            }).encode()))
            return True
        watch = [_PROTO_IN] + ([sock] if interp_open else []) + ([pidfd] if status is None else [])
        watch += list(cell.pipes) if cell else []
        ready, _, _ = select.select(watch, [], [], cell.timeout() if cell else None)
        for fd in ready:
            if fd == pidfd:
                status = os.waitpid(child, 0)[1]
                os.close(pidfd)
            elif fd == sock:
                data = sock.recv(65536)
                if not data:
                    interp_open = False  # it is exiting: the pidfd says when
                    continue
                for kind, payload in from_interp.feed(data):
                    if kind == b'R':
                        _write_all(_PROTO_OUT, _frame(b'R', payload))
                    elif kind == b'B':
                        if cell and cell.done is None:
                            cell.bundle(payload)
                        sock.sendall(_frame(b'A'))  # the interpreter waits for it
                    elif kind == b'D' and cell:
                        cell.done = payload
            elif fd == _PROTO_IN:
                data = os.read(_PROTO_IN, 1 << 20)
                if not data:
                    return status is not None  # the host ended the session
                for kind, payload in from_host.feed(data):
                    if kind == b'C' and status is None:
                        started = time.monotonic()
                        (out_r, out_w), (err_r, err_w) = os.pipe(), os.pipe()
                        os.set_blocking(out_r, False)  # readiness from select can be stale (see _Cell.bundle)
                        os.set_blocking(err_r, False)
                        cell = _Cell(json.loads(payload), out_r, err_r)
                        hdr = _frame(b'C', payload)
                        socket.send_fds(sock, [hdr[:_HEADER]], [out_w, err_w])
                        sock.sendall(hdr[_HEADER:])
                        os.close(out_w)
                        os.close(err_w)
                    elif kind == b'K' and status is None:
                        os.kill(child, signal.SIGKILL)
                    elif kind == b'S' and status is None:
                        sock.sendall(_frame(b'S'))  # handled in order, before any later C
            elif cell and fd in cell.pipes:
                cell.read(fd)


# ---- the interpreter ---------------------------------------------------------------------------

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
            _write_all(w, data)
        except OSError:
            pass  # the cell closed its stdin, or ended before reading it all
        finally:
            os.close(w)

    def close(self):
        os.dup2(_NULL, 0)
        if self.thread:
            self.thread.join()


_stdin_like = sys.stdin  # encoding and errors for the per-cell sys.stdin
_main = types.ModuleType('__main__')
_main.__dict__['__builtins__'] = builtins
_namespace = _main.__dict__
_cells = 0


def _idle_sigint(signo, frame):
    """Between cells a SIGINT (a timeout that came just as the cell ended) is dropped."""


_user_sigint = signal.default_int_handler


def _with_user_sigint(fn, *args):
    """Runs fn with the user's SIGINT handler (KeyboardInterrupt unless the cells changed it)."""
    global _user_sigint
    try:
        signal.signal(signal.SIGINT, _user_sigint)
        return fn(*args)
    finally:
        _user_sigint = signal.signal(signal.SIGINT, _idle_sigint)


# ---- rich outputs (docs/api.md, "Sessions"): MIME bundles in Jupyter's convention ------------------

# The cell in progress, as display() sees it: {"cap", "truncated", "shown"} (shown: ids of the
# figures already sent, so a figure is sent once a cell); None between cells, when a user's thread
# that calls display() is ignored. Set and cleared with _send_lock held, so no B follows its D.
_out = None
_send_lock = threading.Lock()
_sock = None
# A bundle is at most this big even without a cap: the host refuses frames over 64 MiB.
_MAX_BUNDLE = 32 << 20
# IPython's formatters, in its order; the _repr_mimebundle_ of an object wins over them.
_REPRS = (('image/png', '_repr_png_'), ('image/jpeg', '_repr_jpeg_'), ('image/svg+xml', '_repr_svg_'),
          ('text/html', '_repr_html_'), ('text/markdown', '_repr_markdown_'), ('text/latex', '_repr_latex_'),
          ('application/json', '_repr_json_'), ('application/javascript', '_repr_javascript_'),
          ('application/pdf', '_repr_pdf_'))
_BINARY = ('image/png', 'image/jpeg', 'application/pdf', 'image/gif', 'image/webp')


def _warn(what):
    print(f'emberd display: {what}', file=sys.stderr)


def _method(obj, name):
    """obj's bound `name` method, as IPython finds one: not on classes, not on objects that claim
    every attribute (a canary name they should not have)."""
    if isinstance(obj, type):
        return None
    try:
        if getattr(obj, '_ipython_canary_method_should_not_exist_', None) is not None:
            return None
        m = getattr(obj, name, None)
    except Exception:
        return None
    return m if callable(m) else None


def _encoded(mime, data):
    """One bundle entry as JSON carries it (binary: base64; JSON types: the object), or None."""
    if isinstance(data, tuple) and len(data) == 2:
        data = data[0]  # (data, metadata), as _repr_*_ may return
    if mime.endswith('json') and not isinstance(data, (str, bytes)):
        try:
            json.dumps(data)
        except (TypeError, ValueError) as e:
            _warn(f'{mime} dropped: not JSON ({e})')
            return None
        return data
    if isinstance(data, (bytes, bytearray, memoryview)):
        data = bytes(data)
        return base64.b64encode(data).decode() if mime in _BINARY or mime.startswith('image/') \
            else data.decode('utf-8', 'replace')
    if isinstance(data, str):
        return data  # binary types given as text are base64 already, as in IPython
    if data is not None:
        _warn(f'{mime} dropped: {type(data).__name__} is neither text nor bytes')
    return None


def _figure_class():
    """matplotlib's Figure if this session imported it (never imports matplotlib itself)."""
    mod = sys.modules.get('matplotlib.figure')
    return getattr(mod, 'Figure', None)


def _figure_png(fig):
    buf = io.BytesIO()
    fig.savefig(buf, format='png', dpi='figure')  # the figure's own size: figsize x dpi pixels
    if _out is not None:
        _out['shown'].add(id(fig))
    return buf.getvalue()


def _bundle(obj, plain=None, include=None, exclude=None):
    """obj's MIME bundle: _repr_mimebundle_, then each _repr_*_, then text/plain (its repr).
    A failing method is reported on stderr and skipped."""
    data = {}

    def put(mime, value):
        value = _encoded(mime, value)
        if value is not None:
            data[mime] = value

    def call(fn, name, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            _warn(f'{type(obj).__name__}.{name} failed:')
            _report(e)
            return None

    figure = _figure_class()
    if figure is not None and isinstance(obj, figure):
        put('image/png', call(_figure_png, '_figure_png', obj))
    m = _method(obj, '_repr_mimebundle_')
    if m is not None:
        got = call(m, '_repr_mimebundle_', include=include, exclude=exclude)
        if isinstance(got, tuple) and len(got) == 2:
            got = got[0]
        if isinstance(got, dict):
            for mime, value in got.items():
                if isinstance(mime, str):
                    put(mime, value)
    for mime, name in _REPRS:
        m = None if mime in data else _method(obj, name)
        if m is not None:
            put(mime, call(m, name))
    if not isinstance(data.get('text/plain'), str):
        data['text/plain'] = plain if plain is not None else repr(obj)
    if include:
        data = {k: v for k, v in data.items() if k in include}
    if exclude:
        data = {k: v for k, v in data.items() if k not in exclude}
    return data


def _emit(data, main=False):
    """Sends a bundle (after the cell's prints: they are flushed into its pipes first)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    payload = json.dumps(dict(data, is_main_result=main), ensure_ascii=False)
    payload = payload.encode('utf-8', 'backslashreplace')  # a lone surrogate: a \udcXX escape
    _uninterrupted(_send_bundle, payload)


def _send_bundle(payload):
    """B to the pump, then wait for its A: it has forwarded what the pipes held before the B, and
    nothing the cell writes after this returns can overtake it."""
    with _send_lock:
        if _out is None:
            return  # a thread of a cell that ended
        cap = _out['cap']
        if len(payload) > (min(cap, _MAX_BUNDLE) if cap else _MAX_BUNDLE):
            _out['truncated'] = True
            return
        _sock.sendall(_frame(b'B', payload))
        ack = b''
        while len(ack) < _HEADER:
            got = _sock.recv(_HEADER - len(ack))
            if not got:
                raise SystemExit('emberd session: the pump is gone')
            ack += got
        if ack[:3] != b'ESA':
            raise SystemExit('emberd session: bad answer from the pump')


class _Deferred:
    def __init__(self):
        self.hit = False

    def __call__(self, signo, frame):
        self.hit = True


def _uninterrupted(fn, *args):
    """Runs fn with SIGINT held back (a KeyboardInterrupt in the middle of a frame would break the
    framing), then delivers one that came meanwhile. Only the main thread handles signals."""
    if threading.current_thread() is not threading.main_thread():
        return fn(*args)
    deferred = _Deferred()
    old = signal.signal(signal.SIGINT, deferred)
    try:
        return fn(*args)
    finally:
        signal.signal(signal.SIGINT, old)
        if deferred.hit:
            signal.raise_signal(signal.SIGINT)


def display(*objs, raw=False, include=None, exclude=None):
    """Shows each object as a rich output of the cell (IPython's display(): raw=True takes MIME
    bundles as they are)."""
    for obj in objs:
        if raw:
            if not isinstance(obj, dict):
                raise TypeError(f'display(raw=True) takes MIME bundles (dicts), not {type(obj).__name__}')
            data = {}
            for mime, value in obj.items():
                value = _encoded(str(mime), value)
                if value is not None:
                    data[str(mime)] = value
            _emit(data)
        else:
            _emit(_bundle(obj, include=include, exclude=exclude))


def _open_figures():
    """pyplot's open figures, if the session imported pyplot."""
    helpers = sys.modules.get('matplotlib._pylab_helpers')
    if 'matplotlib.pyplot' not in sys.modules or helpers is None:
        return []
    return [m.canvas.figure for m in helpers.Gcf.get_all_fig_managers()]


def _show_figures(render=True):
    """Sends every open figure not sent yet in this cell as a PNG bundle, then closes them all:
    what plt.show() does here, and what happens at the end of every cell."""
    figs = _open_figures()
    try:
        for fig in figs:
            if render and (_out is None or id(fig) not in _out['shown']):
                _emit(_bundle(fig))
    finally:
        pyplot = sys.modules.get('matplotlib.pyplot')
        for fig in figs:
            try:
                pyplot.close(fig)
            except Exception:
                pass


class _PyplotHook:
    """A meta path finder that makes matplotlib.pyplot's show() send the open figures, patched as
    pyplot is imported (so cells that never import it pay nothing)."""

    def find_spec(self, name, path, target=None):
        if name != 'matplotlib.pyplot':
            return None
        for finder in sys.meta_path:
            if finder is not self and hasattr(finder, 'find_spec'):
                spec = finder.find_spec(name, path, target)
                if spec is not None:
                    break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, 'exec_module'):
            spec.loader = _PatchingLoader(spec.loader)
        return spec


class _PatchingLoader:
    def __init__(self, inner):
        self.inner = inner

    def __getattr__(self, name):  # get_source, get_resource_reader, ...: the real loader's
        return getattr(self.inner, name)

    def create_module(self, spec):
        return self.inner.create_module(spec)

    def exec_module(self, module):
        self.inner.exec_module(module)
        original = module.show

        def show(*args, **kwargs):
            _show_figures()

        show.__doc__, show.__wrapped__ = original.__doc__, original
        module.show = show


def _execute(code, name):
    """Runs a cell like a REPL or notebook: the repr of a final expression is its value, and its
    MIME bundle the main result."""
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
            value = repr(result)
            _emit(_bundle(result, plain=value), main=True)
            return value
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


def _guarded(fn, *args):
    """Runs fn as the user's code: (status, value, interrupted), the error reported on stderr."""
    global _user_sigint
    try:
        return 0, _with_user_sigint(fn, *args), False
    except SystemExit as e:  # the session survives; the status is what a process would exit with
        if e.code is None:
            return 0, None, False
        if isinstance(e.code, int):
            return e.code & 0xff, None, False
        print(e.code, file=sys.stderr)
        return 1, None, False
    except KeyboardInterrupt as e:
        _report(e)
        return 130, None, True
    except BaseException as e:
        _report(e)
        return 1, None, False
    finally:
        if signal.getsignal(signal.SIGINT) is not _idle_sigint:  # an interrupt hit the restore
            _user_sigint = signal.signal(signal.SIGINT, _idle_sigint)


def _run_cell(req, out_w, err_w):
    """Runs one cell with fds 1 and 2 on its pipes; returns the D frame's payload."""
    global _cells, _out
    _cells += 1
    os.dup2(out_w, 1)
    os.dup2(err_w, 2)
    os.close(out_w)
    os.close(err_w)
    inp = _Input(base64.b64decode(req['stdin']) if req.get('stdin') else b'')
    _out = {'cap': int(req.get('cap') or 0), 'truncated': False, 'shown': set()}
    start = time.perf_counter_ns()
    status, value, interrupted = _guarded(_execute, req['code'], f'<cell {_cells}>')
    # Figures left open are shown, unless the cell was interrupted (its time is up): then only closed.
    late = _guarded(_show_figures, not interrupted)
    if late[0] and not status:
        status, interrupted = late[0], late[2]
    duration = (time.perf_counter_ns() - start) // 1000
    inp.close()
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            stream.flush()
        except Exception:
            pass
    # The cell's pipes close here (in this process): the pump sees EOF unless a background process
    # of the cell still holds them.
    os.dup2(_NULL, 1)
    os.dup2(_STDERR, 2)
    return {'id': req.get('id'), 'exit_code': status, 'value': value, 'interrupted': interrupted,
            'truncated': False, 'duration_us': duration}


def _reseed():
    """A fork's interpreter has its parent's `random` state: draw a new seed from this VM's kernel
    (its entropy is the fork's own). Only the module's generator (random.random(), the functions
    imported from it); Random() instances the cells made, and numpy's, keep theirs."""
    mod = sys.modules.get('random')
    try:
        if mod is not None:
            mod.seed()
    except Exception as e:  # the cells replaced it: theirs to seed
        print(f'emberd session: could not reseed random: {e!r}', file=sys.stderr)


def _recv_request(sock):
    """The next C frame and the two pipe ends that came with it, or 'S' for a reseed; None at EOF."""
    header, fds = b'', []
    while len(header) < _HEADER:
        data, got, _, _ = socket.recv_fds(sock, _HEADER - len(header), 2)
        fds += got
        if not data:
            return None
        header += data
    if header[:3] == b'ESS' and not fds:
        return 'S'
    n = int.from_bytes(header[4:8], 'big')
    payload = bytearray()
    while len(payload) < n:
        chunk = sock.recv(min(n - len(payload), 1 << 20))
        if not chunk:
            return None
        payload += chunk
    if header[:3] != b'ESC' or len(fds) != 2:
        raise SystemExit('emberd session: bad request from the pump')
    return json.loads(payload), fds


def _interpret(sock):
    global _sock, _out
    _sock = sock
    sys.modules['__main__'] = _main
    builtins.display = display
    os.environ.setdefault('MPLBACKEND', 'agg')  # a session has no display; read as matplotlib loads
    sys.meta_path.insert(0, _PyplotHook())
    signal.signal(signal.SIGINT, _idle_sigint)
    sock.sendall(_frame(b'R', json.dumps({'pid': os.getpid(), 'python': sys.version.split()[0]}).encode()))
    while True:
        got = _recv_request(sock)
        if got is None:
            return
        if got == 'S':
            _reseed()
            continue
        done = _run_cell(got[0], *got[1])
        with _send_lock:
            done['truncated'], _out = _out['truncated'], None
            sock.sendall(_frame(b'D', json.dumps(done).encode()))


def _serve():
    pump_end, interp_end = socket.socketpair()
    child = os.fork()
    if child == 0:
        pump_end.close()
        try:
            _interpret(interp_end)
        finally:
            os._exit(0)
    interp_end.close()
    reaped = False
    try:
        reaped = _pump(child, pump_end)
    finally:
        # The session is over: its interpreter and every process it started end with it (the
        # session exec is a process group of its own; never signal a group that is not ours).
        if os.getpgrp() == os.getpid():
            os.killpg(0, signal.SIGKILL)
        elif not reaped:
            os.kill(child, signal.SIGKILL)


_serve()
os._exit(0)
