#!/usr/bin/env python3
"""The python fast path (docs/protocol.md, "Fast path") of the real emberd-init in host mode, with
this host's python3 as the pack interpreter: the forkserver must give what a fresh `python3 -c`
gives (output, exit status, tracebacks, stdin/env/cwd, process group, open fds), kill and reap
like any exec, and fall back to a fresh process when the server is gone.
Usage: forkserver_test.py path/to/emberd-init. Prints "N passed, M failed"."""
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from agent_test import (EXEC, EXIT, SHUTDOWN, SIGNAL, STDIN, STDOUT, TLV_TYPES, WINDOW, Client, field,  # noqa: E402
                        frame, parse_tlv, pid_alive, u8, u32, u64, wait_gone)

TLV_TYPES[EXIT][6] = 'u8'  # fast_path

FRESH = u8(9, 1)
AGENT_PID = None
TMP = None
SOCK = None
_chan = [1000]


def chan():
    _chan[0] += 1
    return _chan[0]


def run(c, src, *extra, timeout=20.0):
    """EXEC of python code: (exit fields, stdout, stderr)."""
    return c.run(chan(), field(2, src) + b''.join(extra), timeout=timeout)


def fast(ex):
    return ex.get(6) == 1


def both(c, src, *extra):
    """The same code through the fast path and a fresh interpreter."""
    a = run(c, src, *extra)
    b = run(c, src, *extra, FRESH)
    assert fast(a[0]) and not fast(b[0]), (a[0], b[0])
    return a, b


def same(c, src, *extra):
    a, b = both(c, src, *extra)
    assert (a[0][1], a[0][2], a[1], a[2]) == (b[0][1], b[0][2], b[1], b[2]), f'fast {a}\nfresh {b}'
    return a


def forkservers():
    """Our agent's forkserver processes (running, not zombies)."""
    found = []
    for d in os.listdir('/proc'):
        if not d.isdigit():
            continue
        try:
            with open(f'/proc/{d}/stat') as f:
                stat = f.read().rsplit(')', 1)[1].split()
            with open(f'/proc/{d}/cmdline', 'rb') as f:
                cmd = f.read()
        except OSError:
            continue
        if int(stat[1]) == AGENT_PID and b'<emberd-forkserver>' in cmd and stat[0] != 'Z':
            found.append(int(d))
    return found


def the_server(c):
    """The running forkserver (started by an exec if there is none)."""
    deadline = time.monotonic() + 5
    while not fast(run(c, 'pass')[0]):
        assert time.monotonic() < deadline, 'no forkserver'
    [server] = forkservers()
    return server


# ---- tests ----

def t_print(c):
    ex, out, err = run(c, 'print(6*7)')
    assert (ex[1], ex[2], ex[3], ex[4], out, err) == (0, 0, 0, 0, b'42\n', b''), (ex, out, err)
    assert fast(ex), ex
    assert len(forkservers()) == 1, forkservers()
    ex, out, _ = run(c, 'print(6*7)', FRESH)
    assert out == b'42\n' and 6 not in ex, ex


def t_exit_codes(c):
    for src, code in (('import sys; sys.exit(3)', 3), ('import sys; sys.exit()', 0), ('raise SystemExit(None)', 0),
                      ('raise SystemExit("bye")', 1), ('import sys; sys.exit(-1)', 255), ('import os; os._exit(7)', 7)):
        ex, _, _ = same(c, src)
        assert ex[1] == code, (src, ex)


def t_traceback(c):
    ex, out, err = same(c, 'def f():\n    1/0\nprint("before")\nf()')
    assert ex[1] == 1 and out == b'before\n', (ex, out)
    assert err == (b'Traceback (most recent call last):\n  File "<string>", line 4, in <module>\n'
                   b'  File "<string>", line 2, in f\nZeroDivisionError: division by zero\n'), err
    same(c, 'def f(:\n  pass')  # a SyntaxError is reported like a fresh interpreter's
    same(c, 'import sys\ndef hook(t, v, tb): print("hooked", t.__name__)\nsys.excepthook = hook\nraise ValueError')


def t_keyboard_interrupt(c):
    ex, _, err = same(c, 'raise KeyboardInterrupt')
    assert (ex[1], ex[2]) == (130, 2) and err.endswith(b'KeyboardInterrupt\n'), (ex, err)


def t_same_interpreter_state(c):
    """What the code can observe about its process matches a fresh `python3 -c`."""
    src = '\n'.join([
        'import os, sys',
        'print(sys.argv, __name__, sorted(globals()), __builtins__.__name__, __spec__, __loader__)',
        'print(sys.orig_argv[-2:] == ["-c", ' + repr('x') + '] or sys.orig_argv[-1][:6])',
        'for s in (sys.stdin, sys.stdout, sys.stderr):',
        '    print(s.name, s.mode, s.encoding, s.errors, s.line_buffering, s.write_through, s.isatty(), s.seekable(), s.fileno())',
        'print(sys.path, os.getcwd(), sys.flags)',
        'print(os.getppid() == %d, os.getpgid(0) == os.getpid(), os.getsid(0) == os.getpid())' % AGENT_PID,
        'print(sorted(os.listdir("/proc/self/fd")))',  # no fd of the agent or the server leaks in
        'print(sorted(os.environ.items()))',
        'print(signal_state := __import__("signal").getsignal(2), __import__("signal").getsignal(13))',
        'print(__import__("signal").pthread_sigmask(0, []))',
    ])
    ex, out, _ = same(c, src)
    assert ex[1] == 0 and b"['-c'] __main__" in out and b'True True True' in out, out


def t_stdin(c):
    ex, out, _ = same(c, 'import sys; print(repr(sys.stdin.read()))', field(5, 'héllo\n'))
    assert out == "'héllo\\n'\n".encode(), out
    ch = chan()  # stdin that stays open: STDIN frames, then EOF
    c.send(frame(EXEC, ch, field(2, 'import sys\nfor line in sys.stdin: print(line.strip().upper(), flush=True)') + u8(6, 1)))
    c.send(frame(STDIN, ch, b'one\ntwo\n'))
    c.send(frame(STDIN, ch, b''))
    out, ex = b'', None
    while ex is None:
        ftype, _, p = c.wait(lambda f: f[1] == ch)
        if ftype == STDOUT:
            out += p
        elif ftype == EXIT:
            ex = parse_tlv(EXIT, p)
    assert out == b'ONE\nTWO\n' and fast(ex), (out, ex)


def t_env_cwd(c):
    ex, out, _ = same(c, 'import os; print(os.environ["X"], os.getcwd(), os.environ["HOME"])',
                      field(3, 'X=\xe9t\xe9'), field(4, '/tmp'))
    assert out == 'été /tmp /root\n'.encode(), out
    ex, _, err = same(c, 'print(1)', field(4, '/nonexistent/dir'))
    assert ex[1] == 126 and err == b'emberd-init: cd /nonexistent/dir: No such file or directory\n', (ex, err)
    # Entries that change how python starts up take a fresh interpreter.
    for kv in ('PYTHONDONTWRITEBYTECODE=1', 'LANG=C', 'LC_ALL=C', 'PATH=/usr/bin:/bin', 'HOME=/tmp'):
        ex, out, _ = run(c, 'print(1)', field(3, kv))
        assert out == b'1\n' and not fast(ex), (kv, ex)
    ex, out, _ = run(c, 'import time; print(time.tzname[0])', field(3, 'TZ=XYZ+3'))
    assert out == b'XYZ\n' and fast(ex), (out, ex)


def t_exit_like_cpython(c):
    """Threads are joined, atexit runs, files left open are flushed, a stdout flush error is 120."""
    path = os.path.join(TMP, 'unclosed.txt')
    ex, out, _ = same(c, '\n'.join([
        'import atexit, threading, time',
        'atexit.register(print, "atexit")',
        'threading.Thread(target=lambda: (time.sleep(0.2), print("thread"))).start()',
        f'f = open({path!r}, "w"); f.write("unflushed")',
        'class D:',
        '    def __del__(self): print("del")',
        'd = D()',
    ]))
    assert out == b'thread\natexit\ndel\n', out
    with open(path) as f:
        assert f.read() == 'unflushed'
    ex, _, err = same(c, 'import os, sys; sys.stdout.write("x"); os.close(1)')
    assert ex[1] == 120, (ex, err)


def t_new_modules_importable(c):
    """Files and site directories created after the server started are seen, as by a fresh process."""
    d = tempfile.mkdtemp(dir=TMP)
    run(c, f'open({d + "/emb_mod_a.py"!r}, "w").write("V = 5")')
    ex, out, err = run(c, 'import emb_mod_a; print(emb_mod_a.V)', field(4, d))
    assert out == b'5\n' and fast(ex), (out, err)


def t_timeout_kills_worker_and_children(c):
    t0 = time.monotonic()
    ex, out, _ = run(c, 'import subprocess\np = subprocess.Popen(["sleep", "30"])\nprint(p.pid, flush=True)\nwhile True: pass',
                     u64(7, 500))
    assert (ex[1], ex[2], ex[3]) == (137, 9, 1) and fast(ex), ex
    assert 450_000 < ex[5] < 3_000_000 and time.monotonic() - t0 < 5, ex
    assert wait_gone(int(out)), 'a child of the timed-out worker survived'


def t_signal(c):
    ch = chan()
    c.send(frame(EXEC, ch, field(2, 'import time; print("up", flush=True); time.sleep(30)')))
    c.wait(lambda f: f[1] == ch and f[0] == STDOUT)
    c.send(frame(SIGNAL, ch, u32(1, 15)))
    ex = parse_tlv(EXIT, c.wait(lambda f: f[1] == ch and f[0] == EXIT)[2])
    assert (ex[1], ex[2]) == (143, 15) and fast(ex), ex


def t_orphans_reaped(c):
    ex, out, _ = run(c, 'import os, subprocess\np = subprocess.Popen(["sleep", "0.3"])\nprint(os.getpid(), p.pid)')
    assert ex[1] == 0 and fast(ex), ex
    worker, child = map(int, out.split())
    assert wait_gone(worker, 2), f'worker {worker}: {pid_alive(worker)}'
    assert pid_alive(child) is not None, 'the background child should outlive the exec'
    assert wait_gone(child, 3), f'orphan {child} was not reaped ({pid_alive(child)})'


def t_concurrent(c):
    chans = [chan() for _ in range(8)]
    for ch in chans:
        c.send(frame(EXEC, ch, field(2, f'for i in range(3000): print("{ch}-%d" % i)')))
    outs, exits = {ch: bytearray() for ch in chans}, {}
    while len(exits) < len(chans):
        ftype, ch, p = c.wait(lambda f: f[1] in outs, timeout=30)
        if ftype == STDOUT:
            outs[ch] += p
            c.send(frame(WINDOW, ch, u32(1, len(p))))
        elif ftype == EXIT:
            exits[ch] = parse_tlv(EXIT, p)
    for ch in chans:
        assert bytes(outs[ch]) == ''.join(f'{ch}-{i}\n' for i in range(3000)).encode(), ch
        assert exits[ch][1] == 0 and fast(exits[ch]), exits[ch]


def t_no_shared_randomness(c):
    src = 'import os, random, uuid; print(os.urandom(16).hex(), random.random(), random.getrandbits(64), uuid.uuid4())'
    a, b = run(c, src), run(c, src)
    assert fast(a[0]) and fast(b[0])
    fa, fb = a[1].split(), b[1].split()
    assert all(x != y for x, y in zip(fa, fb)), (fa, fb)


def t_no_state_between_execs(c):
    run(c, 'import sys, os; sys.modules["os"].leak = 1; sys.path.append("/leak"); os.environ["LEAK"] = "1"; x = 1')
    ex, out, _ = run(c, 'import os, sys; print(hasattr(os, "leak"), "/leak" in sys.path, "LEAK" in os.environ, "x" in globals())')
    assert out == b'False False False False\n' and fast(ex), out


def t_fallback_when_server_killed(c):
    server = the_server(c)
    os.kill(server, signal.SIGKILL)
    ex, out, _ = run(c, 'print(6*7)')  # served whatever the state: the old server's socket may still drain
    assert out == b'42\n' and ex[1] == 0, (ex, out)
    assert wait_gone(server), f'the killed server was not reaped ({pid_alive(server)})'
    deadline = time.monotonic() + 5
    while True:  # the next one restarts the server
        ex, out, _ = run(c, 'print(6*7)')
        assert out == b'42\n', out
        if fast(ex):
            break
        assert time.monotonic() < deadline, 'the forkserver was not restarted'
    assert len(forkservers()) == 1 and forkservers() != [server]


def t_fallback_when_server_stopped_mid_request(c):
    """A request queued at a server that dies is served by a fresh process, exactly once."""
    server = the_server(c)
    marker = os.path.join(TMP, 'once.txt')
    os.kill(server, signal.SIGSTOP)
    ch = chan()
    c.send(frame(EXEC, ch, field(2, f'open({marker!r}, "a").write("x"); print("ran")')))
    time.sleep(0.3)
    os.kill(server, signal.SIGKILL)
    ex = None
    out = b''
    while ex is None:
        ftype, _, p = c.wait(lambda f: f[1] == ch, timeout=10)
        if ftype == STDOUT:
            out += p
        elif ftype == EXIT:
            ex = parse_tlv(EXIT, p)
    assert out == b'ran\n' and ex[1] == 0 and not fast(ex), (out, ex)
    with open(marker) as f:
        assert f.read() == 'x'


def t_timeout_before_the_server_answers(c):
    """The timeout holds even when the server is stuck, and the code then never runs."""
    server = the_server(c)
    marker = os.path.join(TMP, 'never.txt')
    os.kill(server, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        ex, _, _ = run(c, f'open({marker!r}, "w").write("ran")', u64(7, 300))
        elapsed = time.monotonic() - t0
        assert (ex[1], ex[2], ex[3]) == (137, 9, 1) and not fast(ex), ex
        assert 0.29 < elapsed < 1.0, elapsed
    finally:
        os.kill(server, signal.SIGCONT)
    ex, out, _ = run(c, 'print(6*7)')
    assert out == b'42\n' and fast(ex), (ex, out)  # the same server serves on
    time.sleep(0.2)
    assert not os.path.exists(marker), 'the code of a cancelled exec ran'


def t_host_leaving_kills_fast_execs(c):
    c.close()
    c = Client(SOCK)
    c.send(frame(EXEC, 1, field(2, 'import os, time; print(os.getpid(), flush=True); time.sleep(30)')))
    _, _, p = c.wait(lambda f: f[0] == STDOUT)
    pid = int(p)
    c.close()
    assert wait_gone(pid), 'a fast-path exec survived the host disconnecting'
    return Client(SOCK)  # the next host is served


def main():
    binary = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else 'build/emberd-init')
    global TMP, AGENT_PID, SOCK
    TMP = tempfile.mkdtemp(prefix='emberd-fs-test-')
    path = SOCK = os.path.join(TMP, 'ctl.sock')
    interp = os.path.join(TMP, 'interpreter')
    with open(interp, 'w') as f:
        f.write('python3\n-c\n')
    log = open(os.path.join(TMP, 'agent.log'), 'w+')
    agent = subprocess.Popen([binary, '--listen-unix', path], env=dict(os.environ, EMBERD_INTERPRETER_FILE=interp), stderr=log)
    AGENT_PID = agent.pid
    passed = failed = 0
    try:
        for _ in range(200):
            if os.path.exists(path):
                break
            time.sleep(0.01)
        c = Client(path)
        for t in [t for name, t in globals().items() if name.startswith('t_')]:
            start = time.monotonic()
            try:
                r = t(c)
                if isinstance(r, Client):
                    c = r
                passed += 1
                print(f'ok   fast_{t.__name__[2:]} ({(time.monotonic() - start) * 1000:.0f} ms)')
            except Exception:
                failed += 1
                print(f'FAIL fast_{t.__name__[2:]}')
                traceback.print_exc(file=sys.stdout)
                c.close()
                c = Client(path)
        try:
            servers = forkservers()
            c.send(frame(SHUTDOWN))
            assert agent.wait(timeout=5) == 0
            assert all(wait_gone(s) for s in servers), 'the forkserver outlived the agent'
            passed += 1
            print('ok   fast_shutdown_takes_the_server_along')
        except Exception:
            failed += 1
            print('FAIL fast_shutdown_takes_the_server_along')
            traceback.print_exc(file=sys.stdout)
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
        log.seek(0)
        if failed:
            print('agent log:\n' + log.read())
        log.close()
        subprocess.run(['rm', '-rf', TMP])
    print(f'{passed} passed, {failed} failed')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
