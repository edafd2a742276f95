#!/usr/bin/env python3
"""The python fast path (docs/protocol.md, "Fast path") of the real emberd-init in host mode, with
this host's python3 as the pack interpreter: the forkserver must give what a fresh `python3 -c`
gives (output, exit status, tracebacks, stdin/env/cwd, process group, open fds), kill and reap
like any exec, and fall back to a fresh process when the server is gone.
Usage: forkserver_test.py path/to/emberd-init. Prints "N passed, M failed"."""
import os
import re
import signal
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (EXEC, EXIT, SIGNAL, STDIN, STDOUT, SHUTDOWN, WINDOW, children, field, frame, main,  # noqa: E402
                     parent_of, parse_tlv, proc_state, tests_in, u8, u32, u64, wait_gone, wait_until)

FRESH = u8(9, 1)
_chan = [1000]


def chan():
    _chan[0] += 1
    return _chan[0]


def run(c, src, *extra):
    """EXEC of python code: (exit fields, stdout, stderr)."""
    return c.run(chan(), field(2, src) + b''.join(extra))


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


def comm(pid):
    try:
        with open(f'/proc/{pid}/comm', 'rb') as f:
            return f.read().rstrip(b'\n')
    except OSError:
        return None


def forkservers(c):
    """The agent's forkserver processes (running, not zombies; not its parked workers). A worker
    whose exec has ended may still be dying for a moment (its EXIT comes before its teardown:
    the early exit), and looks the same: see one_server."""
    return [p for p in children(c.agent.pid, b'<emberd-forkserver>') if proc_state(p) not in (None, 'Z') and comm(p) != b'emberd-parked']


def one_server(c):
    """The one forkserver, once the workers of ended execs are gone."""
    [server] = wait_until(lambda: s if len(s := forkservers(c)) == 1 else None, 'one forkserver process')
    return server


def parked(c):
    """The forkserver's parked workers (re-parented to the agent, a child subreaper)."""
    return [p for p in children(c.agent.pid, b'<emberd-forkserver>') if proc_state(p) not in (None, 'Z') and comm(p) == b'emberd-parked']


def the_server(c):
    """The running forkserver (started by an exec if there is none)."""
    wait_until(lambda: fast(run(c, 'pass')[0]), 'an exec takes the fast path')
    return one_server(c)


# ---- tests ----

def t_print(c):
    ex, out, err = run(c, 'print(6*7)')
    assert (ex[1], ex[2], ex[3], ex[4], out, err) == (0, 0, 0, 0, b'42\n', b''), (ex, out, err)
    assert fast(ex), ex
    one_server(c)
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
        'print(os.getppid() == %d, os.getpgid(0) == os.getpid(), os.getsid(0) == os.getpid())' % c.agent.pid,
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
    ex, out, _ = c.collect(ch)
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
    path = os.path.join(c.agent.tmp, 'unclosed.txt')
    ex, out, _ = same(c, '\n'.join([
        'import atexit, threading',
        'atexit.register(print, "atexit")',
        # Prints once the main thread is done with the code: only a join at exit lets it finish.
        'threading.Thread(target=lambda: (threading.main_thread().join(), print("thread"))).start()',
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


def t_exit_functions_and_errors_at_exit(c):
    """What runs at exit after the code (atexit functions, their errors, an exception in the code)
    gives what a fresh interpreter gives: output, tracebacks, status. Nothing imports atexit for
    code that does not."""
    for src in (
        'import sys; print("atexit" in sys.modules)',
        'import atexit, sys\natexit.register(lambda: print("late", flush=False))\nsys.exit(4)',
        'import atexit\natexit.register(print, "handler ran")\nraise ValueError("boom")',
        'import atexit\ndef bad(): raise RuntimeError("in handler")\natexit.register(bad)\nprint("body")',
        'import atexit, sys\natexit.register(sys.exit, 9)\nprint("body")',
        'import atexit, sys\natexit.register(sys.stderr.write, "to stderr\\n")\nsys.stdout.write("no newline")',
        'import atexit, os\natexit.register(print, "never")\nos._exit(5)',
    ):
        a, b = both(c, src)
        addr = lambda err: re.sub(rb' at 0x[0-9a-f]+', b' at ADDR', err)  # noqa: E731  objects' addresses differ
        assert (a[0][1], a[0][2], a[1], addr(a[2])) == (b[0][1], b[0][2], b[1], addr(b[2])), f'{src}\nfast {a}\nfresh {b}'



def t_early_exit_ends_the_exec_and_kills_the_worker(c):
    """A worker's exit datagram ends its exec with that status at once, and the worker is killed:
    whatever it does after saying it exited, it cannot outlive its exec. A datagram from any other
    process (here a child of the worker) is ignored."""
    say = ('import os, socket\n'
           'def say(status):\n'
           '    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n'
           '    s.sendto(status.to_bytes(4, "big"), b"\\0emberd-exit-%d" % os.getppid())\n')
    ex, out, _ = run(c, say + 'print(os.getpid(), flush=True)\nsay(7)\nimport time; time.sleep(600)')
    assert (ex[1], ex[2], fast(ex)) == (7, 0, True), ex
    wait_gone(int(out), 'the worker that said it exited is killed')
    ex, out, _ = run(c, say + 'if os.fork() == 0:\n    say(9); os._exit(0)\nos.wait()\nprint("leader")')
    assert (ex[1], out, fast(ex)) == (0, b'leader\n', True), (ex, out)


def t_new_modules_importable(c):
    """Files and site directories created after the server started are seen, as by a fresh process."""
    d = tempfile.mkdtemp(dir=c.agent.tmp)
    run(c, f'open({d + "/emb_mod_a.py"!r}, "w").write("V = 5")')
    ex, out, err = run(c, 'import emb_mod_a; print(emb_mod_a.V)', field(4, d))
    assert out == b'5\n' and fast(ex), (out, err)


def t_timeout_kills_worker_and_children(c):
    ex, out, _ = run(c, 'import subprocess\np = subprocess.Popen(["sleep", "30"])\nprint(p.pid, flush=True)\nwhile True: pass',
                     u64(7, 500))
    assert (ex[1], ex[2], ex[3]) == (137, 9, 1) and fast(ex), ex
    assert ex[5] >= 500_000, f'killed before its timeout: {ex}'
    wait_gone(int(out), 'a child of the timed-out worker is killed')


def t_signal(c):
    ch = chan()
    c.send(frame(EXEC, ch, field(2, 'import time; print("up", flush=True); time.sleep(30)')))
    c.wait(lambda f: f[1] == ch and f[0] == STDOUT)
    c.send(frame(SIGNAL, ch, u32(1, 15)))
    ex = parse_tlv(EXIT, c.wait(lambda f: f[1] == ch and f[0] == EXIT)[2])
    assert (ex[1], ex[2]) == (143, 15) and fast(ex), ex


def t_orphans_reaped(c):
    ex, out, _ = run(c, 'import os, subprocess\np = subprocess.Popen(["sleep", "30"])\nprint(os.getpid(), p.pid)')
    assert ex[1] == 0 and fast(ex), ex
    worker, child = map(int, out.split())
    wait_gone(worker, f'the worker {worker} is reaped')
    assert proc_state(child) not in (None, 'Z'), 'the background child outlives the exec'
    assert parent_of(child) == c.agent.pid, 'the orphan is re-parented to the agent'
    os.kill(child, signal.SIGTERM)
    wait_gone(child, f'the orphan {child} is reaped once it exits')


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
    wait_gone(server, 'the killed server is reaped')

    def fast_again():  # a later exec restarts the server
        ex, out, _ = run(c, 'print(6*7)')
        assert out == b'42\n', out
        return fast(ex)
    wait_until(fast_again, 'the forkserver is restarted')
    assert one_server(c) != server


def t_fallback_when_server_stopped_mid_request(c):
    """A request queued at a server that dies is served by a fresh process, exactly once."""
    server = the_server(c)
    marker = os.path.join(c.agent.tmp, 'once.txt')
    os.kill(server, signal.SIGSTOP)
    ch = chan()
    c.send(frame(EXEC, ch, field(2, f'open({marker!r}, "a").write("x"); print("ran")')))
    c.sync()  # the agent has handled the EXEC: the request waits at the stopped server
    os.kill(server, signal.SIGKILL)
    ex, out, _ = c.collect(ch)
    assert out == b'ran\n' and ex[1] == 0 and not fast(ex), (out, ex)
    with open(marker) as f:
        assert f.read() == 'x'


def t_timeout_before_the_server_answers(c):
    """The timeout holds even when the server is stuck, and the code then never runs."""
    server = the_server(c)
    marker = os.path.join(c.agent.tmp, 'never.txt')
    os.kill(server, signal.SIGSTOP)
    try:
        ex, _, _ = run(c, f'open({marker!r}, "w").write("ran")', u64(7, 300))
        assert (ex[1], ex[2], ex[3]) == (137, 9, 1) and not fast(ex), ex
        assert ex[5] >= 300_000, f'ended before its timeout: {ex}'
    finally:
        os.kill(server, signal.SIGCONT)
    ex, out, _ = run(c, 'print(6*7)')
    assert out == b'42\n' and fast(ex), (ex, out)  # the same server serves on
    # The server forked the cancelled request's worker before this one's: once every child of
    # the agent but the server is gone, that worker has come and gone too.
    wait_until(lambda: [p for p in children(c.agent.pid) if comm(p) != b'emberd-parked'] == [server], 'the late worker is gone')
    assert not os.path.exists(marker), 'the code of a cancelled exec ran'


def t_host_leaving_kills_fast_execs(c):
    c.close()
    c = c.agent.connect()
    c.send(frame(EXEC, 1, field(2, 'import os, time; print(os.getpid(), flush=True); time.sleep(30)')))
    _, _, p = c.wait(lambda f: f[0] == STDOUT)
    pid = int(p)
    c.close()
    wait_gone(pid, 'a fast-path exec is killed when the host disconnects')
    return c.agent.connect()  # the next host is served


# ---- no output is lost when the writer dies (issue 9) ----
# Each case: the writer writes everything, then dies at once with os._exit(3) (no interpreter
# teardown); whatever is still in the pipes must arrive, in order, before EXIT with status 3.
# 50 runs of each path, because a loss shows as a race.

RUNS = 50
LINES = 25000  # 200,000 bytes: "%07d\n" each
WRITER = ('import os, sys\n'
          'sys.stdout.write("".join("%07d\\n" % i for i in range({lines})))\n'
          'sys.stdout.flush()\n'
          'sys.stderr.write("e" * 3000)\n'
          'sys.stderr.flush()\n'
          'os._exit(3)')
EXPECTED = ''.join('%07d\n' % i for i in range(LINES)).encode()


def assert_whole(ex, out, err, fast_path, run):
    assert (ex[1], ex[2], fast(ex)) == (3, 0, fast_path), f'run {run}: {ex}'
    assert out == EXPECTED and err == b'e' * 3000, f'run {run}: {len(out)} of {len(EXPECTED)} stdout bytes, {len(err)} of 3000 stderr bytes'


def t_output_lost_when_writer_exits(c):
    """A fresh process: 200,000 bytes then os._exit(3) arrive whole with status 3."""
    for i in range(RUNS):
        assert_whole(*run(c, WRITER.format(lines=LINES), FRESH), False, i)


def t_output_lost_when_worker_exits(c):
    """A forkserver worker: 200,000 bytes then os._exit(3) arrive whole with status 3."""
    for i in range(RUNS):
        assert_whole(*run(c, WRITER.format(lines=LINES)), True, i)


def t_output_lost_when_background_writer_exits(c):
    """stdin left open (a background exec): 200,000 bytes then os._exit(3) arrive whole."""
    for i in range(RUNS):
        for extra, fast_path in ((b'', True), (FRESH, False)):
            assert_whole(*run(c, WRITER.format(lines=LINES), u8(6, 1), extra), fast_path, i)


def t_output_lost_when_streamed_writer_exits_without_credit(c):
    """A streamed exec whose host grants credit only as it consumes, and has consumed nothing yet
    when the writer dies: 400,000 bytes (more than the initial window, the rest waits in the
    pipe), then os._exit(3). The first line is the writer's pid, so the host can wait until the
    writer is gone (exited and reaped) before it grants anything back."""
    lines = 50000
    src = 'import os\nos.write(1, b"%d\\n" % os.getpid())\n' + WRITER.format(lines=lines)
    for i in range(RUNS):
        for extra, fast_path in ((b'', True), (FRESH, False)):
            ch = chan()
            c.send(frame(EXEC, ch, field(2, src) + extra))
            head, unpaid = b'', 0
            while b'\n' not in head:
                ftype, _, p = c.wait(lambda f: f[1] == ch)
                assert ftype == STDOUT, (hex(ftype), p)
                head += p
                unpaid += len(p)
            pid = int(head.split(b'\n')[0])
            wait_gone(pid, f'run {i}: the writer exits while its output waits for credit')
            c.send(frame(WINDOW, ch, u32(1, unpaid)))
            ex, out, err = c.collect(ch)
            out = head + out
            expected = b'%d\n' % pid + ''.join('%07d\n' % n for n in range(lines)).encode()
            assert (ex[1], fast(ex)) == (3, fast_path), f'run {i}: {ex}'
            assert out == expected and err == b'e' * 3000, f'run {i}: {len(out)} of {len(expected)} stdout bytes, {len(err)} stderr'


def t_shutdown_takes_the_server_along(c):
    servers = forkservers(c)
    assert servers, 'a forkserver runs'
    c.send(frame(SHUTDOWN))
    assert c.agent.proc.wait(timeout=30) == 0
    for server in servers:  # dead is enough: who reaps it now is not the agent's business
        wait_until(lambda: proc_state(server) in (None, 'Z'), 'the forkserver ends with the agent')


if __name__ == '__main__':
    sys.exit(main(tests_in(globals()), ['python3', '-c'], prefix='fast_'))
