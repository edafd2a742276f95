# emberd forkserver: the fast path for EXEC `code` when the pack's interpreter is python
# (docs/protocol.md, "Fast path"). emberd-init embeds this file and starts it once, lazily, as
#   <interpreter args> 'exec(compile(open(0,"rb",closefd=False).read(),"<emberd-forkserver>","exec"))'
# with this source on fd 0 and its end of a socketpair on fd 3.
#
# The server only ever waits for requests and forks: it runs no user code, so every worker is a
# fork of the same pristine interpreter. Per request (4 bytes: a sequence number, plus 4 fds by
# SCM_RIGHTS: the exec's stdin, stdout, stderr and a memfd holding the EXEC payload):
#   server --fork--> intermediate --fork--> worker; the intermediate exits at once, so the worker
#   is re-parented to emberd-init (PID 1, or a child subreaper in host mode), which reaps it.
# The worker calls setsid(), joins the exec cgroup, reports (seq, its pid) on the socket, and only
# then runs the code: a request without a report never ran, so the agent may serve it with a
# fresh process instead.
# Failures are reported as (seq, -errno). Reports are 8 bytes, written in one send (atomic).
#
# Parked workers: the double fork and the copy-on-write faults of a worker's first steps cost more
# than running `print(6*7)`, so the server keeps up to _PARK workers forked ahead, each waiting on
# its own socketpair with the server. A request goes to a parked worker (the server forwards the
# 4 bytes and the 4 fds) when one is there, else the server forks as above. A parked worker made
# its pages its own at idle priority (nice 19) while it waited, and at dispatch takes back the
# server's priority, reseeds `random` if it was imported (a parked worker may outlive a snapshot
# restore: clones must not share its state), and goes on like a fresh worker. The server parks a
# new worker only when no request is waiting; a parked worker whose server is gone (EOF on its
# pair) exits, so the agent's socket still reaches EOF when the server dies. While parked a
# worker's /proc/PID/comm is "emberd-parked".
_main_globals = dict(globals())  # what `python3 -c` gives __main__, before we add anything
import os
import sys
import _socket
_SOCK_FD = 3
_NFDS = 4
_PARK = 2  # parked workers kept (each costs its private pages, ~1-2 MiB)
_PARKED_COMM = b'emberd-parked'
_PARK_IDLE_S = 0.02  # a park waits for this much quiet: back-to-back requests are never slowed
_SERVER_PRIO = os.getpriority(os.PRIO_PROCESS, 0)
_CAN_RENICE = os.geteuid() == 0  # only root may take its priority back after nice 19
# The exec cgroup's cgroup.procs (emberd-init's limits.c), when the guest has one: each worker
# moves itself in before it reports, so an exec's processes count against the sandbox's limits
# while the server stays outside them. Popped: no worker's environment shows it.
_CGROUP_FD = os.environ.pop('EMBERD_EXEC_CGROUP_FD', None)
_CGROUP_FD = int(_CGROUP_FD) if _CGROUP_FD else None
try:
    with open('/proc/self/comm', 'rb') as _f:
        _ORIG_COMM = _f.read().rstrip(b'\n')
except OSError:
    _ORIG_COMM = b'python3'


def _report(sock, seq, value):
    sock.sendall(seq.to_bytes(4, 'big') + value.to_bytes(4, 'big', signed=True))  # 8 bytes: one write


def _recv_request(conn, space):
    """(msg, fds) of one request on conn: 4 bytes and their SCM_RIGHTS fds."""
    msg, anc, _flags, _addr = conn.recvmsg(4, space)
    fds = []
    for level, kind, data in anc:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            fds += [int.from_bytes(data[i:i + 4], sys.byteorder, signed=True) for i in range(0, len(data) - 3, 4)]
    return msg, fds


def _comm(name):
    try:
        with open('/proc/self/comm', 'wb') as f:
            f.write(name)
    except OSError:
        pass


def _pretouch():
    """What a worker's first steps write, done ahead: a compile, a stdio stack, an exec in a new
    namespace, a collection. Each first write to a page inherited from the server is a
    copy-on-write fault (slow under TCG); a parked worker takes them while it waits."""
    null = os.open(os.devnull, os.O_RDWR)
    try:
        for write in (False, True):
            _stdio(null, '<pretouch>', sys.__stdout__ if write else sys.__stdin__, write).close()
        ns = dict(_main_globals)
        exec(compile('x = 6*7\n', '<string>', 'exec'), ns)
        ns.clear()
        import gc
        gc.collect()
    except BaseException:
        pass
    finally:
        os.close(null)


_worker_pid = None  # set in the worker: a fork the user's code makes must not say it exited


def _become_worker(sock, seq):
    """The worker's side of the hand-off: own session, the exec cgroup, then the report. The code
    runs only after the report was sent."""
    global _worker_pid
    _worker_pid = os.getpid()
    try:
        os.setsid()
    except OSError:
        pass  # a parked worker has its session already
    try:
        if _CGROUP_FD is not None:
            os.write(_CGROUP_FD, b'0')
            os.close(_CGROUP_FD)
        _report(sock, seq, os.getpid())
        sock.close()
    except BaseException:
        os._exit(1)  # not reported: the agent serves this exec with a fresh process


def _park(sock, parked, space):
    """Forks a parked worker (double fork, as for a request). In the server: its end of the
    worker's pair, or None. In the worker, once a request came: (seq, fds)."""
    try:
        mine, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM)
    except OSError:
        return None
    try:
        pid = os.fork()
    except OSError:
        mine.close()
        theirs.close()
        return None
    if pid == 0:
        _comm(_PARKED_COMM)  # before the worker is re-parented, so no one ever sees it unnamed
        try:
            if os.fork() != 0:
                os._exit(0)
        except OSError:
            os._exit(0)
        # The parked worker.
        try:
            mine.close()
            for other in parked:
                other.close()
            os.setsid()
            prio = os.getpriority(os.PRIO_PROCESS, 0)
            os.nice(19)
            _pretouch()
            msg, fds = _recv_request(theirs, space)
        except BaseException:
            os._exit(0)
        if len(msg) != 4 or len(fds) != _NFDS:
            os._exit(0)  # the server is gone (EOF), or it sent nothing usable
        theirs.close()
        try:
            os.setpriority(os.PRIO_PROCESS, 0, prio)
        except OSError:
            pass  # without the right to raise it again the exec runs niced
        _comm(_ORIG_COMM)
        rnd = sys.modules.get('random')
        if rnd is not None:
            rnd.seed()
        return int.from_bytes(msg, 'big'), fds
    theirs.close()
    _reap_intermediate(pid)
    return mine


def _waiting(sock, within):
    """Whether a request (or the agent's EOF) comes within `within` seconds."""
    sock.settimeout(within)
    try:
        sock.recv(1, _socket.MSG_PEEK)
        return True
    except TimeoutError:
        return False
    except OSError:
        return True  # let recvmsg see it
    finally:
        sock.settimeout(None)


def _dispatch(parked, msg, fds):
    """Hands a request to a parked worker; False if none took it."""
    while parked:
        conn = parked.pop(0)
        try:
            conn.sendmsg([msg], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, b''.join(fd.to_bytes(4, sys.byteorder, signed=True) for fd in fds))])
            return True
        except OSError:
            pass  # that worker died: try the next
        finally:
            conn.close()
    return False


def _serve():
    sock = _socket.socket(fileno=_SOCK_FD)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)  # the source pipe is read: nothing may be read from it again
    os.close(null)
    space = _socket.CMSG_SPACE(_NFDS * 4 * 4)  # room for more fds than expected: none is leaked
    import gc
    gc.freeze()  # workers' collections skip everything the server made (no copy-on-write faults)
    parked = []
    while True:
        # Park workers only while no request waits: a request never waits behind a park.
        while len(parked) < _PARK and not _waiting(sock, _PARK_IDLE_S):
            if _CAN_RENICE:  # the fork itself at idle priority too: never ahead of a running exec
                os.setpriority(os.PRIO_PROCESS, 0, 19)
            try:
                got = _park(sock, parked, space)
            finally:
                if _CAN_RENICE:
                    os.setpriority(os.PRIO_PROCESS, 0, _SERVER_PRIO)
            if got is None:
                break
            if isinstance(got, tuple):  # this is the parked worker, and its request came
                _become_worker(sock, got[0])
                return got[1]
            parked.append(got)
        msg, fds = _recv_request(sock, space)
        if not msg:
            os._exit(0)  # the agent is gone
        seq = int.from_bytes(msg.ljust(4, b'\0'), 'big')
        if len(msg) != 4 or len(fds) != _NFDS:
            for fd in fds:
                os.close(fd)
            _report(sock, seq, -22)  # EINVAL
            continue
        if _dispatch(parked, msg, fds):
            for fd in fds:
                os.close(fd)
            continue
        try:
            pid = os.fork()
        except OSError as e:
            pid = -e.errno
        if pid == 0:
            try:
                if os.fork() != 0:
                    os._exit(0)
            except OSError as e:
                _report(sock, seq, -e.errno)
                os._exit(0)
            # The worker.
            for conn in parked:
                conn.close()
            _become_worker(sock, seq)
            return fds
        for fd in fds:
            os.close(fd)
        if pid < 0:
            _report(sock, seq, pid)
        else:
            _reap_intermediate(pid)


def _reap_intermediate(pid):
    """Waits for the intermediate child, which exits right after it forks the worker."""
    while True:
        try:
            os.waitpid(pid, 0)
            return
        except ChildProcessError:
            return
        except InterruptedError:
            pass


def _fields(payload):
    """The EXEC payload (TLV, already validated by the agent): code, env entries and cwd."""
    code, env, cwd, off = b'', [], None, 0
    while off + 5 <= len(payload):
        tag, n = payload[off], int.from_bytes(payload[off + 1:off + 5], 'big')
        val = payload[off + 5:off + 5 + n]
        off += 5 + n
        if tag == 2:
            code = val
        elif tag == 3:
            env.append(val)
        elif tag == 4:
            cwd = val
    return code, env, cwd


def _stdio(fd, name, like, write):
    """A fresh sys.std* for fd, configured as CPython's create_stdio() does at start-up."""
    import io
    raw = io.FileIO(fd, 'wb' if write else 'rb', closefd=False)
    raw.name = name
    unbuffered = write and like.write_through  # python -u
    buf = raw if unbuffered else io.BufferedWriter(raw) if write else io.BufferedReader(raw)
    line = not unbuffered and (fd == 2 or raw.isatty())
    stream = io.TextIOWrapper(buf, like.encoding, like.errors, '\n', line, bool(unbuffered))
    stream.mode = 'w' if write else 'r'
    return stream


def _refresh_imports():
    """What changed on disk since the server started: forget cached directory listings, and add
    site-packages directories created since (a fresh interpreter would have them in sys.path)."""
    sys.modules['_frozen_importlib_external'].PathFinder.invalidate_caches()
    site = sys.modules.get('site')
    if site is None or sys.flags.no_site:
        return
    try:
        dirs = list(site.getsitepackages())
        if site.ENABLE_USER_SITE:
            dirs.insert(0, site.getusersitepackages())
        for d in dirs:
            if d not in sys.path and os.path.isdir(d):
                site.addsitedir(d)
    except Exception:
        pass


def _prepare(fds):
    """Turns a fresh fork into what `python3 -c CODE` would be at its first line; returns CODE."""
    for i in range(3):
        os.dup2(fds[i], i)  # inheritable, like the fds a fresh process starts with
    for fd in fds[:3]:
        if fd > 2:
            os.close(fd)
    with open(fds[3], 'rb') as f:  # the memfd; closing it frees it
        payload = f.read()
    if not payload:
        os._exit(0)  # the agent emptied it: this exec was killed before it started (nothing runs)
    code, env, cwd = _fields(payload)
    for kv in env:
        k, _, v = kv.partition(b'=')
        os.environb[k] = v
    if env and 'time' in sys.modules and any(kv.startswith(b'TZ=') for kv in env):
        sys.modules['time'].tzset()
    try:
        os.chdir(cwd if cwd is not None else b'/root')
    except OSError as e:
        try:
            if cwd is not None:
                raise
            os.chdir('/')
        except OSError:
            os.write(2, b'emberd-init: cd %s: %s\n' % (cwd or b'/root', e.strerror.encode()))
            os._exit(126)
    sys.stdin = sys.__stdin__ = _stdio(0, '<stdin>', sys.__stdin__, False)
    sys.stdout = sys.__stdout__ = _stdio(1, '<stdout>', sys.__stdout__, True)
    sys.stderr = sys.__stderr__ = _stdio(2, '<stderr>', sys.__stderr__, True)
    _refresh_imports()
    sys.argv[:] = ['-c']
    sys.orig_argv[-1:] = [code.decode('utf-8', 'surrogateescape')]
    main = type(sys)('__main__')
    main.__dict__.update(_main_globals)
    main.__annotations__ = {}
    sys.modules['__main__'] = main
    return code, main.__dict__


def _run_exitfuncs(atexit):
    """atexit's functions, with their errors reported as at a real exit. There CPython calls them
    with no Python frame running, so the error of a function without a frame of its own (a
    builtin, such as sys.exit) shows no traceback; here the unraisable hook would be given this
    frame as its traceback, which is taken off again."""
    here, hook = sys._getframe(), sys.unraisablehook

    def unraisable(u):
        tb = u.exc_traceback
        if tb is not None and tb.tb_frame is here and tb.tb_next is None:
            u = type(u)((u.exc_type, u.exc_value, None, u.err_msg, u.object))
        hook(u)
    sys.unraisablehook = unraisable
    try:
        atexit._run_exitfuncs()
    finally:
        if sys.unraisablehook is unraisable:  # unless an exit function set its own
            sys.unraisablehook = hook


def _finish(status, namespace, interrupted):
    """CPython's exit, in its order, minus the teardown of every module: in a fork that teardown
    writes to nearly every page, and each copy-on-write fault is slow (30+ ms under TCG).
    Threads are joined, atexit functions run, the code's __main__ objects are released (so files
    it left open are flushed and closed), stdio is flushed (a failure on stdout exits 120)."""
    try:
        if 'threading' in sys.modules:
            sys.modules['threading']._shutdown()
    except BaseException:
        pass
    atexit = sys.modules.get('atexit')  # never imported here: only code that imported it registered functions
    if atexit is not None and atexit._ncallbacks():
        _run_exitfuncs(atexit)
    try:
        namespace.clear()
        import gc
        gc.collect()  # only what the code made: the server's objects are frozen (gc.freeze)
    except BaseException:
        pass
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None and not stream.closed:
                stream.flush()
        except BaseException as e:
            if stream is sys.stdout:
                status = 120
                try:
                    os.write(2, b'Exception ignored in: %a\n%s: %s\n' % (stream, type(e).__name__.encode(), str(e).encode()))
                except BaseException:
                    pass
    if interrupted:  # like CPython after an uncaught KeyboardInterrupt: die by SIGINT
        import _signal
        _signal.signal(_signal.SIGINT, _signal.SIG_DFL)
        os.kill(os.getpid(), _signal.SIGINT)
    _exited(status & 0xff)
    os._exit(status & 0xff)


def _exited(status):
    """The early exit: tells the agent this worker's status before the kernel tears it down (the
    agent then kills it). Best effort: without it the exec ends when the worker is reaped."""
    if os.getpid() != _worker_pid:
        return  # a fork made by the user's code, which exits like any fork
    try:
        s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM | _socket.SOCK_NONBLOCK)
        s.sendto(status.to_bytes(4, 'big'), b'\0emberd-exit-%d' % os.getppid())
    except OSError:
        pass


def _run(fds):
    code, namespace = _prepare(fds)
    status, interrupted = 0, False
    try:
        exec(compile(code, '<string>', 'exec'), namespace)
    except SystemExit as e:  # as CPython's handle_system_exit()
        if e.code is None:
            status = 0
        elif isinstance(e.code, int):
            status = e.code
        else:
            try:
                sys.stderr.write('%s\n' % (e.code,))
            except BaseException:
                pass
            status = 1
    except BaseException as e:
        e.__traceback__ = e.__traceback__.tb_next  # the traceback starts at the user's code
        try:
            sys.excepthook(type(e), e, e.__traceback__)
        except BaseException:
            pass
        status, interrupted = 1, isinstance(e, KeyboardInterrupt)
    e = None
    _finish(status, namespace, interrupted)


_run(_serve())
