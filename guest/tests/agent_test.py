#!/usr/bin/env python3
"""Drives the real emberd-init in host mode (`--listen-unix`) over the protocol of
docs/protocol.md: exec, stdin, flow control, caps, timeouts, signals, orphan reaping, errors,
disconnects. The pack interpreter is `sh -c`. Usage: agent_test.py path/to/emberd-init.
Prints "N passed, M failed"."""
import os
import random
import signal
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (EXEC, EXIT, ERROR, HELLO, HELLO_ACK, PING, PONG, SHUTDOWN, SIGNAL, STDIN,  # noqa: E402
                     STDOUT, WINDOW, argv, blocked_in_write, children, field, frame, main, parent_of,
                     parse_tlv, proc_state, tests_in, u8, u32, u64, wait_gone, wait_until)


def boottime_ms():
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME) // 1_000_000


def t_hello(c):
    before = boottime_ms()
    c.send(frame(HELLO, 0, u32(1, 1) + u64(2, time.time_ns()) + field(3, os.urandom(16))))
    _, _, p = c.wait(lambda f: f[0] == HELLO_ACK)
    after = boottime_ms()
    ack = parse_tlv(HELLO_ACK, p)
    assert ack[1] == 1 and ack[2] == b'0.1.0', ack
    assert ack[3] == [b'exec', b'signal', b'window', b'stdin', b'pty', b'port'], ack
    # Host mode: the agent's CLOCK_BOOTTIME is ours, so its uptime lies between our two readings.
    assert ack[4] == b'unix' and before <= ack[5] <= after, (before, ack, after)


def t_hello_limits_unsupported_in_host_mode(c):
    """Host mode has no writable layer and no exec cgroup: a HELLO asking for limits is still
    answered (the rest of it applies), with limits_error saying why none was applied."""
    for ask in (u64(5, 64 << 20), u32(6, 100), u64(5, 64 << 20) + u32(6, 100)):
        c.send(frame(HELLO, 0, u32(1, 1) + ask))
        _, _, p = c.wait(lambda f: f[0] == HELLO_ACK)
        ack = parse_tlv(HELLO_ACK, p)
        assert ack[9] == b'LIMIT_UNSUPPORTED' and ack[10], ack
        assert not {6, 7, 8} & set(ack), ack  # no limit is in effect, so none is reported
    c.send(frame(HELLO, 0, u32(1, 1)))
    ack = parse_tlv(HELLO_ACK, c.wait(lambda f: f[0] == HELLO_ACK)[2])
    assert 9 not in ack and 10 not in ack, ack  # a HELLO asking for none has no limits_error
    ex, out, _ = c.run(1, argv('echo', 'still serving'))
    assert ex[1] == 0 and out == b'still serving\n', (ex, out)


def t_ping(c):
    c.send(frame(PING, 0, b'ping\x00\xc3\xbf'))
    assert c.wait(lambda f: f[0] == PONG)[2] == b'ping\x00\xc3\xbf'


def t_exec_echo(c):
    t0 = time.monotonic_ns()
    ex, out, err = c.run(1, argv('echo', 'hi'))
    elapsed_us = (time.monotonic_ns() - t0) // 1000
    assert (ex[1], ex[2], ex[3], ex[4], out, err) == (0, 0, 0, 0, b'hi\n', b''), (ex, out, err)
    # Measured in the guest from fork to exit, on the same clock: within our round trip.
    assert 0 < ex[5] <= elapsed_us, (ex, elapsed_us)


def t_exec_code(c):
    ex, out, _ = c.run(2, field(2, 'echo $((6*7)); exit 3'))
    assert ex[1] == 3 and out == b'42\n', (ex, out)


def t_env_cwd_stderr(c):
    ex, out, err = c.run(3, argv('sh', '-c', 'echo "$X/$HOME/$LANG"; pwd; echo oops >&2') + field(3, 'X=\xe9t\xe9') +
                         field(3, 'HOME=/nowhere') + field(4, '/tmp'))
    assert out == 'été//nowhere/C.UTF-8\n/tmp\n'.encode() and err == b'oops\n', (out, err)


def t_stdin(c):
    """The stdin field first, then STDIN frames sent while the process runs, then EOF."""
    c.send(frame(EXEC, 4, argv('sh', '-c', 'echo ready; exec cat') + field(5, b'abc') + u8(6, 1)))
    out = b''
    while b'ready\n' not in out:
        out += c.wait(lambda f: f[1] == 4 and f[0] == STDOUT)[2]
    c.send(frame(STDIN, 4, b'def\x00'))
    c.send(frame(STDIN, 4, b''))
    while True:
        ftype, _, p = c.wait(lambda f: f[1] == 4)
        if ftype == STDOUT:
            out += p
        elif ftype == WINDOW:
            assert parse_tlv(WINDOW, p)[1] == 4, p  # only STDIN bytes earn credit back
        elif ftype == EXIT:
            break
    assert out == b'ready\nabcdef\x00', out


def t_stdin_field_closes(c):
    ex, out, _ = c.run(5, argv('wc', '-c') + field(5, b'x' * 100000))
    assert ex[1] == 0 and out.strip() == b'100000', out


def t_no_stdin_means_eof(c):
    ex, out, _ = c.run(14, argv('cat'))
    assert ex[1] == 0 and out == b'', (ex, out)


def t_not_found(c):
    ex, out, err = c.run(6, argv('/nonexistent/prog', 'a'))
    assert ex[1] == 127 and err == b'emberd-init: /nonexistent/prog: No such file or directory\n', (ex, err)
    interp = c.agent.interp  # a file without an x bit
    ex, _, err = c.run(7, argv(interp))
    assert ex[1] == 126 and err == f'emberd-init: {interp}: Permission denied\n'.encode(), (ex, err)


def t_timeout_kills_group(c):
    ex, out, _ = c.run(8, argv('sh', '-c', 'sleep 30 & echo $!; sleep 30') + u64(7, 1000))
    assert (ex[1], ex[2], ex[3]) == (137, 9, 1), ex
    assert ex[5] >= 1_000_000, f'killed before its timeout: {ex}'
    wait_gone(int(out), 'the background process of a timed-out exec is killed')


def t_orphans_reaped(c):
    ex, out, _ = c.run(9, argv('sh', '-c', 'sleep 30 >/dev/null 2>&1 & echo $!'))
    assert ex[1] == 0, ex
    orphan = int(out)
    assert proc_state(orphan) not in (None, 'Z'), 'the background process outlives the exec'
    assert parent_of(orphan) == c.agent.pid, 'the orphan is re-parented to the agent'
    os.kill(orphan, signal.SIGTERM)
    wait_gone(orphan, f'the orphan {orphan} is reaped once it exits')


def t_output_cap(c):
    ex, out, err = c.run(10, argv('sh', '-c', 'head -c 100000 /dev/zero; head -c 10 /dev/zero >&2') + u64(8, 1000))
    assert len(out) + len(err) == 1000 and ex[4] == 1 and ex[1] == 0, (len(out), len(err), ex)


def t_flow_control(c):
    total = 2_000_000
    c.send(frame(EXEC, 11, argv('head', '-c', str(total), '/dev/zero')))
    got, biggest = 0, 0
    while got < 262144:  # the initial window, without any WINDOW from us
        ftype, _, p = c.wait(lambda f: f[1] == 11)
        assert ftype == STDOUT, hex(ftype)
        got += len(p)
        biggest = max(biggest, len(p))
    # Not a byte more: once the writer is blocked on the full pipe the agent had every chance to
    # read on, and whatever it read before our round trip has arrived by its end.
    [head] = wait_until(lambda: children(c.agent.pid, b'head\x00-c\x00%d\x00' % total), 'the writer runs')
    wait_until(lambda: blocked_in_write(head), 'the writer blocks on the full pipe')
    c.sync()
    assert got == 262144 and not any(f[1] == 11 for f in c.frames), f'sent {got} bytes without credit'
    c.send(frame(WINDOW, 11, u32(1, got)))
    while True:
        ftype, _, p = c.wait(lambda f: f[1] == 11)
        if ftype == EXIT:
            break
        got += len(p)
        biggest = max(biggest, len(p))
        c.send(frame(WINDOW, 11, u32(1, len(p))))
    assert got == total and biggest <= 65536, (got, biggest)


def t_output_before_exit_kept(c):
    ex, out, _ = c.run(12, argv('sh', '-c', 'head -c 300000 /dev/zero; exit 5'))
    assert ex[1] == 5 and len(out) == 300000, (ex, len(out))


def t_concurrent_execs(c):
    chans = range(30, 38)
    for ch in chans:
        c.send(frame(EXEC, ch, argv('sh', '-c', f'for i in $(seq 2000); do echo {ch}-$i; done')))
    outs = {ch: bytearray() for ch in chans}
    done = set()
    while len(done) < len(outs):
        ftype, ch, p = c.wait(lambda f: f[1] in outs)
        if ftype == STDOUT:
            outs[ch] += p
            c.send(frame(WINDOW, ch, u32(1, len(p))))
        elif ftype == EXIT:
            done.add(ch)
    for ch in chans:
        assert bytes(outs[ch]) == ''.join(f'{ch}-{i}\n' for i in range(1, 2001)).encode(), ch


def t_bounded_memory_when_host_stalls(c):
    """The host grants lots of credit but stops reading: the agent must stop reading pipes."""
    c.send(frame(EXEC, 40, argv('head', '-c', '200000000', '/dev/zero')))
    c.send(frame(WINDOW, 40, u32(1, 0xffffffff)))
    [head] = wait_until(lambda: children(c.agent.pid, b'head\x00-c\x00200000000'), 'the writer runs')
    wait_until(lambda: blocked_in_write(head), 'the writer blocks: the agent stopped reading its pipe')
    with open(f'/proc/{c.agent.pid}/status') as f:
        rss_kb = int([line for line in f if line.startswith('VmRSS')][0].split()[1])
    c.send(frame(SIGNAL, 40, u32(1, 9)))
    c.wait(lambda f: f[1] == 40 and f[0] == EXIT)
    c.frames = [f for f in c.frames if f[1] != 40]
    assert rss_kb < 8 * 1024, f'agent RSS {rss_kb} kB while the host was not reading'


def t_signal(c):
    c.send(frame(EXEC, 13, argv('sh', '-c', 'echo up; exec sleep 30')))
    c.wait(lambda f: f[1] == 13 and f[0] == STDOUT)  # it runs
    c.send(frame(SIGNAL, 13, u32(1, 15)))
    _, _, p = c.wait(lambda f: f[1] == 13 and f[0] == EXIT)
    ex = parse_tlv(EXIT, p)
    assert (ex[1], ex[2], ex[3]) == (143, 15, 0), ex


def t_errors(c):
    c.send(b'GET / HTTP/1.1\r\n\r\n')
    assert c.error() == 'BAD_MAGIC'
    c.send(frame(PING, 0, b'after'))
    assert c.wait(lambda f: f[0] == PONG)[2] == b'after'
    assert not any(f[0] == ERROR for f in c.frames), 'one BAD_MAGIC per garbage run'
    c.send(frame(EXEC, 0, argv('true')))
    assert c.error(0) == 'BAD_CHANNEL'
    c.send(frame(PING, 5, b''))
    assert c.error(5) == 'BAD_CHANNEL'
    c.send(frame(WINDOW, 999, u32(1, 5)))
    assert c.error(999) == 'NO_SUCH_CHANNEL'
    c.send(frame(0x55, 0, b'x'))
    assert c.error(0) == 'UNKNOWN_TYPE'
    c.send(frame(STDOUT, 3, b'x'))
    assert c.error(3) == 'UNKNOWN_TYPE'
    c.send(frame(EXEC, 20, argv('true') + field(2, 'x')))
    assert c.error(20) == 'BAD_PAYLOAD'
    c.send(frame(EXEC, 20, field(1, b'a\x00b')))
    assert c.error(20) == 'BAD_PAYLOAD'
    c.send(frame(SIGNAL, 20, field(1, b'\x00\x0f')))
    assert c.error(20) == 'BAD_PAYLOAD'
    c.send(struct.pack('>2sBBII', b'EM', PING, 0, 0, (1 << 20) + 1) + b'\x00' * 64)
    assert c.error() == 'FRAME_TOO_LARGE'
    c.send(frame(EXEC, 21, argv('sleep', '30')))
    c.send(frame(EXEC, 21, argv('true')))
    assert c.error(21) == 'CHANNEL_IN_USE'
    c.send(frame(SIGNAL, 21, u32(1, 9)))
    c.wait(lambda f: f[1] == 21 and f[0] == EXIT)
    # Credit the host grants for an exec that just ended is not an error (it was in flight).
    c.send(frame(WINDOW, 21, u32(1, 10)))
    c.send(frame(PING, 0, b'still'))
    c.wait(lambda f: f[0] == PONG)
    assert not any(f[0] == ERROR for f in c.frames), c.frames


def t_survives_garbage(c):
    rng = random.Random(7)
    types = [HELLO, PING, STDIN, SIGNAL, WINDOW, STDOUT, EXIT, ERROR, 0x00, 0x55, 0xFF]  # no EXEC/SHUTDOWN
    for _ in range(2000):
        if rng.random() < 0.2:
            c.send(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40))))
            continue
        payload = bytes(rng.choice([0, 0, 1, 4, 0xFF, rng.randrange(256)]) for _ in range(rng.randrange(0, 30)))
        raw = frame(rng.choice(types), rng.choice([0, 1, 2, 0xFFFFFFFF]), payload)
        if rng.random() < 0.1:
            raw = raw[:rng.randrange(len(raw))] + bytes([rng.randrange(256)]) + raw[rng.randrange(len(raw)):]
        c.send(raw)
    c.send(b'\x00' * ((1 << 20) + 16) + frame(PING, 0, b'alive'))  # completes any partial frame
    c.wait(lambda f: f[0] == PONG and f[2] == b'alive')
    c.frames.clear()


def t_too_many(c):
    for ch in range(100, 164):
        c.send(frame(EXEC, ch, argv('sleep', '30')))
    c.send(frame(EXEC, 164, argv('true')))
    assert c.error(164) == 'TOO_MANY_EXECS'
    for ch in range(100, 164):
        c.send(frame(SIGNAL, ch, u32(1, 9)))
    for ch in range(100, 164):
        c.wait(lambda f, ch=ch: f[1] == ch and f[0] == EXIT)


def t_disconnect_kills(c):
    c.close()
    c = c.agent.connect()
    c.send(frame(EXEC, 1, argv('sh', '-c', 'echo $$; exec sleep 30')))
    _, _, p = c.wait(lambda f: f[0] == STDOUT)
    pid = int(p)
    c.close()
    wait_gone(pid, 'the exec is killed when the host disconnects')
    c = c.agent.connect()  # and the agent serves the next host
    c.send(frame(PING, 0, b'again'))
    assert c.wait(lambda f: f[0] == PONG)[2] == b'again'
    return c


# ---- pseudo-terminals (EXEC tty, RESIZE; docs/protocol.md "PTY") ----

RESIZE = 0x17


def tty(rows=None, cols=None):
    return u8(10, 1) + (u32(11, rows) if rows is not None else b'') + (u32(12, cols) if cols is not None else b'')


def t_pty_exec_runs_on_a_terminal(c):
    """The child's stdio is the slave, its controlling terminal (`/dev/tty` opens), TERM is set,
    and what it writes to stderr comes as STDOUT: a terminal has one output."""
    ex, out, err = c.run(60, argv('sh', '-c', 'tty; stty size; echo $TERM; echo to-stderr >&2; : </dev/tty && echo ctty') +
                         tty(30, 100))
    lines = out.replace(b'\r\n', b'\n').split(b'\n')
    assert ex[1] == 0 and err == b'', (ex, out, err)
    assert lines[0].startswith(b'/dev/pts/') and lines[1:5] == [b'30 100', b'xterm-256color', b'to-stderr', b'ctty'], out
    ex, out, _ = c.run(61, argv('sh', '-c', 'stty size; echo $TERM') + tty() + field(3, 'TERM=dumb'))
    assert out.replace(b'\r\n', b'\n') == b'24 80\ndumb\n', out  # default size; EXEC's TERM wins


def t_pty_stdin_echo_and_resize(c):
    """Keystrokes go to the master (the line discipline echoes them); RESIZE changes what the
    program sees; Ctrl-D at the start of a line is EOF for the reader."""
    c.send(frame(EXEC, 62, argv('sh', '-c', 'read x; echo "got:$x"; stty size; cat; echo done') + tty(24, 80) + u8(6, 1)))
    c.send(frame(RESIZE, 62, u32(1, 50) + u32(2, 200)))
    c.send(frame(STDIN, 62, b'hello\n'))
    c.send(frame(STDIN, 62, b'\x04'))
    ex, out, _ = c.collect(62)
    text = out.replace(b'\r\n', b'\n')
    assert ex[1] == 0 and b'hello\ngot:hello\n50 200\ndone\n' in text, (ex, out)


def t_pty_bad_resize_and_size(c):
    """RESIZE for an exec without a tty, or with a size of 0, is BAD_PAYLOAD; so is EXEC's."""
    c.send(frame(EXEC, 63, argv('cat') + u8(6, 1)))
    c.send(frame(RESIZE, 63, u32(1, 10) + u32(2, 10)))
    assert c.error(63) == 'BAD_PAYLOAD'
    c.send(frame(STDIN, 63, b''))
    assert c.collect(63)[0][1] == 0
    c.send(frame(EXEC, 64, argv('true') + tty(0, 80)))
    assert c.error(64) == 'BAD_PAYLOAD'


def cmdlines(needle):
    found = []
    for pid in os.listdir('/proc'):
        try:
            with open(f'/proc/{pid}/cmdline', 'rb') as f:
                if needle in f.read():
                    found.append(int(pid))
        except OSError:
            pass
    return found


def t_pty_sigkill_kills_the_session(c):
    """An interactive shell puts each job in its own process group: SIGKILL of a tty exec kills
    every process of its session, not just the leader's group."""
    c.send(frame(EXEC, 65, argv('sh', '-c', 'set -m; sleep 7771 & sleep 7772 & echo started; wait') + tty() + u8(6, 1)))
    out = b''
    while b'started' not in out:
        ftype, _, p = c.wait(lambda f: f[1] == 65)
        out += p if ftype == STDOUT else b''
    wait_until(lambda: len(cmdlines(b'sleep\x0077')) == 2, 'both jobs running')
    assert len({os.getpgid(p) for p in cmdlines(b'sleep\x0077')}) == 2  # two groups of their own
    c.send(frame(SIGNAL, 65, u32(1, 9)))
    ex, _, _ = c.collect(65)
    assert ex[2] == 9, ex
    wait_until(lambda: cmdlines(b'sleep\x0077') == [], 'no job left')


def t_shutdown(c):
    c.send(frame(SHUTDOWN))
    rc = c.agent.proc.wait(timeout=30)
    assert rc == 0, rc


if __name__ == '__main__':
    sys.exit(main(tests_in(globals()), ['sh', '-c']))
