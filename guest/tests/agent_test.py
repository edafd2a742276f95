#!/usr/bin/env python3
"""Drives the real emberd-init in host mode (`--listen-unix`) over the protocol of
docs/protocol.md: exec, stdin, flow control, caps, timeouts, signals, orphan reaping, errors,
disconnects. Usage: agent_test.py path/to/emberd-init. Prints "N passed, M failed"."""
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
import traceback

HELLO, HELLO_ACK, PING, PONG = 0x01, 0x02, 0x03, 0x04
EXEC, STDOUT, STDERR, STDIN, EXIT, SIGNAL, WINDOW, SHUTDOWN, ERROR = 0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x20, 0x7F
TLV_TYPES = {HELLO_ACK: {1: 'u32', 2: 'b', 3: 'b', 4: 'b', 5: 'u64'},
             EXIT: {1: 'u32', 2: 'u32', 3: 'u8', 4: 'u8', 5: 'u64'},
             WINDOW: {1: 'u32'}, ERROR: {1: 'b', 2: 'b'}}


def frame(ftype, channel=0, payload=b''):
    return struct.pack('>2sBBII', b'EM', ftype, 0, channel, len(payload)) + payload


def field(tag, value):
    if isinstance(value, str):
        value = value.encode()
    return struct.pack('>BI', tag, len(value)) + value


def u8(tag, v): return field(tag, struct.pack('>B', v))
def u32(tag, v): return field(tag, struct.pack('>I', v))
def u64(tag, v): return field(tag, struct.pack('>Q', v))


def parse_tlv(ftype, payload):
    out, off = {}, 0
    while off < len(payload):
        tag, n = struct.unpack_from('>BI', payload, off)
        raw = payload[off + 5: off + 5 + n]
        off += 5 + n
        kind = TLV_TYPES.get(ftype, {}).get(tag, 'b')
        val = raw if kind == 'b' else int.from_bytes(raw, 'big')
        out.setdefault(tag, []).append(val)
    return {k: (v if len(v) > 1 else v[0]) for k, v in out.items()}


class Client:
    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.buf = b''
        self.frames = []  # received, not yet consumed

    def send(self, data):
        self.sock.sendall(data)

    def _read(self, timeout):
        self.sock.settimeout(max(timeout, 0.001))
        try:
            chunk = self.sock.recv(1 << 20)
        except socket.timeout:
            return
        if not chunk:
            raise EOFError('agent closed the connection')
        self.buf += chunk
        while len(self.buf) >= 12:
            magic, ftype, _flags, ch, n = struct.unpack_from('>2sBBII', self.buf)
            assert magic == b'EM', self.buf[:16]
            if len(self.buf) < 12 + n:
                break
            self.frames.append((ftype, ch, self.buf[12:12 + n]))
            self.buf = self.buf[12 + n:]

    def wait(self, match, timeout=5.0):
        deadline = time.monotonic() + timeout
        while True:
            for i, f in enumerate(self.frames):
                if match(f):
                    return self.frames.pop(i)
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f'no matching frame; have {[(hex(t), c) for t, c, _ in self.frames]}')
            self._read(left)

    def pump(self, seconds):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self._read(deadline - time.monotonic())

    def error(self, channel=0, timeout=5.0):
        _, _, p = self.wait(lambda f: f[0] == ERROR and f[1] == channel, timeout)
        return parse_tlv(ERROR, p)[1].decode()

    def run(self, channel, payload, grant=True, timeout=10.0, max_frame=None):
        """EXEC and collect until EXIT; grants credit back like the host does."""
        self.send(frame(EXEC, channel, payload))
        out, err = bytearray(), bytearray()
        deadline = time.monotonic() + timeout
        while True:
            ftype, ch, p = self.wait(lambda f: f[1] == channel, deadline - time.monotonic())
            if max_frame is not None:
                max_frame[0] = max(max_frame[0], len(p))
            if ftype in (STDOUT, STDERR):
                (out if ftype == STDOUT else err).extend(p)
                if grant:
                    self.send(frame(WINDOW, channel, u32(1, len(p))))
            elif ftype == EXIT:
                return parse_tlv(EXIT, p), bytes(out), bytes(err)
            elif ftype == ERROR:
                raise AssertionError(f'ERROR on channel {channel}: {parse_tlv(ERROR, p)}')

    def close(self):
        self.sock.close()


def argv(*args):
    return b''.join(field(1, a) for a in args)


def pid_alive(pid):
    """Running, or a zombie nobody reaped: either way not cleaned up."""
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().rsplit(')', 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):  # gone (possibly between open and read)
        return None


def wait_gone(pid, timeout=3.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pid_alive(pid) is None:
            return True
        time.sleep(0.02)
    return False


# ---- tests ----

INTERP = None  # the interpreter file (sh -c), mode 0644
AGENT_PID = None

def t_hello(c):
    c.send(frame(HELLO, 0, u32(1, 1) + u64(2, time.time_ns()) + field(3, os.urandom(16))))
    _, _, p = c.wait(lambda f: f[0] == HELLO_ACK)
    ack = parse_tlv(HELLO_ACK, p)
    assert ack[1] == 1 and ack[2] == b'0.1.0', ack
    assert ack[3] == [b'exec', b'signal', b'window', b'stdin'], ack
    assert ack[4] == b'unix' and ack[5] > 0, ack


def t_ping(c):
    c.send(frame(PING, 0, b'ping\x00\xc3\xbf'))
    assert c.wait(lambda f: f[0] == PONG)[2] == b'ping\x00\xc3\xbf'


def t_exec_echo(c):
    ex, out, err = c.run(1, argv('echo', 'hi'))
    assert (ex[1], ex[2], ex[3], ex[4], out, err) == (0, 0, 0, 0, b'hi\n', b''), (ex, out, err)
    assert 0 < ex[5] < 5_000_000, ex


def t_exec_code(c):
    ex, out, _ = c.run(2, field(2, 'echo $((6*7)); exit 3'))
    assert ex[1] == 3 and out == b'42\n', (ex, out)


def t_env_cwd_stderr(c):
    ex, out, err = c.run(3, argv('sh', '-c', 'echo "$X/$HOME/$LANG"; pwd; echo oops >&2') + field(3, 'X=\xe9t\xe9') +
                         field(3, 'HOME=/nowhere') + field(4, '/tmp'))
    assert out == 'été//nowhere/C.UTF-8\n/tmp\n'.encode() and err == b'oops\n', (out, err)


def t_stdin(c):
    c.send(frame(EXEC, 4, argv('cat') + field(5, b'abc') + u8(6, 1)))
    time.sleep(0.05)
    c.send(frame(STDIN, 4, b'def\x00'))
    c.send(frame(STDIN, 4, b''))
    out = b''
    while True:
        ftype, _, p = c.wait(lambda f: f[1] == 4)
        if ftype == STDOUT:
            out += p
        elif ftype == WINDOW:
            assert parse_tlv(WINDOW, p)[1] == 4, p  # only STDIN bytes earn credit back
        elif ftype == EXIT:
            break
    assert out == b'abcdef\x00', out


def t_stdin_field_closes(c):
    ex, out, _ = c.run(5, argv('wc', '-c') + field(5, b'x' * 100000))
    assert ex[1] == 0 and out.strip() == b'100000', out


def t_no_stdin_means_eof(c):
    ex, out, _ = c.run(14, argv('cat'), timeout=3)
    assert ex[1] == 0 and out == b'', (ex, out)


def t_not_found(c):
    ex, out, err = c.run(6, argv('/nonexistent/prog', 'a'))
    assert ex[1] == 127 and err == b'emberd-init: /nonexistent/prog: No such file or directory\n', (ex, err)
    ex, _, err = c.run(7, argv(INTERP))  # a file without an x bit
    assert ex[1] == 126 and err == f'emberd-init: {INTERP}: Permission denied\n'.encode(), (ex, err)


def t_timeout_kills_group(c):
    ex, out, _ = c.run(8, argv('sh', '-c', 'sleep 30 & echo $!; sleep 30') + u64(7, 300))
    assert (ex[1], ex[2], ex[3]) == (137, 9, 1), ex
    assert 250_000 < ex[5] < 3_000_000, ex
    assert wait_gone(int(out)), 'background process of a timed-out exec survived'


def t_orphans_reaped(c):
    ex, out, _ = c.run(9, argv('sh', '-c', 'sleep 0.2 >/dev/null 2>&1 & echo $!'))
    assert ex[1] == 0, ex
    pid = int(out)
    assert pid_alive(pid) is not None, 'background process should outlive the exec'
    assert wait_gone(pid), f'orphan {pid} was not reaped ({pid_alive(pid)})'


def t_output_cap(c):
    ex, out, err = c.run(10, argv('sh', '-c', 'head -c 100000 /dev/zero; head -c 10 /dev/zero >&2') + u64(8, 1000))
    assert len(out) + len(err) == 1000 and ex[4] == 1 and ex[1] == 0, (len(out), len(err), ex)


def t_flow_control(c):
    total = 2_000_000
    c.send(frame(EXEC, 11, argv('head', '-c', str(total), '/dev/zero')))
    got, biggest = 0, 0
    c.pump(0.4)  # no WINDOW yet: the agent may only send the initial window
    for ftype, ch, p in list(c.frames):
        if ch == 11:
            assert ftype == STDOUT, hex(ftype)
            got += len(p)
            biggest = max(biggest, len(p))
    c.frames = [f for f in c.frames if f[1] != 11]
    assert got == 262144, f'sent {got} bytes without credit'
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
    time.sleep(1.0)
    with open(f'/proc/{AGENT_PID}/status') as f:
        rss_kb = int([l for l in f if l.startswith('VmRSS')][0].split()[1])
    c.send(frame(SIGNAL, 40, u32(1, 9)))
    c.wait(lambda f: f[1] == 40 and f[0] == EXIT, timeout=20)
    c.frames = [f for f in c.frames if f[1] != 40]
    assert rss_kb < 8 * 1024, f'agent RSS {rss_kb} kB while the host was not reading'


def t_signal(c):
    c.send(frame(EXEC, 13, argv('sleep', '30')))
    time.sleep(0.1)
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
    c.send(frame(EXEC, 21, argv('sleep', '5')))
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
    import random
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
    c.wait(lambda f: f[0] == PONG and f[2] == b'alive', timeout=10)
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


def t_disconnect_kills(path):
    c = Client(path)
    c.send(frame(EXEC, 1, argv('sh', '-c', 'echo $$; exec sleep 30')))
    _, _, p = c.wait(lambda f: f[0] == STDOUT)
    pid = int(p)
    c.close()
    assert wait_gone(pid), 'exec survived the host disconnecting'
    c2 = Client(path)  # and the agent serves the next host
    c2.send(frame(PING, 0, b'again'))
    assert c2.wait(lambda f: f[0] == PONG)[2] == b'again'
    return c2


def main():
    binary = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else 'build/emberd-init')
    tmp = tempfile.mkdtemp(prefix='emberd-agent-test-')
    path = os.path.join(tmp, 'ctl.sock')
    global INTERP
    interp = INTERP = os.path.join(tmp, 'interpreter')
    with open(interp, 'w') as f:
        f.write('sh\n-c\n')
    env = dict(os.environ, EMBERD_INTERPRETER_FILE=interp)
    agent = subprocess.Popen([binary, '--listen-unix', path], env=env, stderr=subprocess.PIPE)
    global AGENT_PID
    AGENT_PID = agent.pid
    passed = failed = 0
    try:
        for _ in range(200):
            if os.path.exists(path):
                break
            time.sleep(0.01)
        c = Client(path)
        tests = [t for name, t in globals().items() if name.startswith('t_') and name != 't_disconnect_kills']
        for t in tests:
            start = time.monotonic()
            try:
                t(c)
                passed += 1
                print(f'ok   {t.__name__[2:]} ({(time.monotonic() - start) * 1000:.0f} ms)')
            except Exception:
                failed += 1
                print(f'FAIL {t.__name__[2:]}')
                traceback.print_exc(file=sys.stdout)
                c.close()
                c = Client(path)
        try:
            c.close()
            c = t_disconnect_kills(path)
            passed += 1
            print('ok   disconnect_kills')
        except Exception:
            failed += 1
            print('FAIL disconnect_kills')
            traceback.print_exc(file=sys.stdout)
            c = Client(path)
        try:
            c.send(frame(SHUTDOWN))
            rc = agent.wait(timeout=5)
            assert rc == 0, rc
            passed += 1
            print('ok   shutdown')
        except Exception:
            failed += 1
            print('FAIL shutdown')
            traceback.print_exc(file=sys.stdout)
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
        log = agent.stderr.read().decode(errors='replace')
        if failed:
            print('agent log:\n' + log)
        for name in os.listdir(tmp):
            os.unlink(os.path.join(tmp, name))
        os.rmdir(tmp)
    print(f'{passed} passed, {failed} failed')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
