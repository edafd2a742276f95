"""What every host-mode test of emberd-init shares: the protocol client (docs/protocol.md), the
agent started as `emberd-init --listen-unix PATH`, waits on process state in /proc, and the
runner that prints "ok NAME" / "FAIL NAME" and "N passed, M failed" (the Makefile totals those).

Nothing here sleeps to synchronise: a test waits for the frame it needs, or polls the state it
needs (a process gone, a process blocked) until it holds, under TIMEOUT. TIMEOUT is generous
because a loaded machine is slow, never wrong; tests that pass do not wait for it."""
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
import traceback

TIMEOUT = 30.0  # seconds for anything a test waits for

HELLO, HELLO_ACK, PING, PONG = 0x01, 0x02, 0x03, 0x04
EXEC, STDOUT, STDERR, STDIN, EXIT, SIGNAL, WINDOW, SHUTDOWN, ERROR = 0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x20, 0x7F
TLV_TYPES = {HELLO_ACK: {1: 'u32', 2: 'b', 3: 'b', 4: 'b', 5: 'u64', 6: 'u64', 7: 'u32', 8: 'u64'},
             EXIT: {1: 'u32', 2: 'u32', 3: 'u8', 4: 'u8', 5: 'u64', 6: 'u8'},
             WINDOW: {1: 'u32'}, ERROR: {1: 'b', 2: 'b'}}


# ---- frames ----

def frame(ftype, channel=0, payload=b''):
    return struct.pack('>2sBBII', b'EM', ftype, 0, channel, len(payload)) + payload


def field(tag, value):
    if isinstance(value, str):
        value = value.encode()
    return struct.pack('>BI', tag, len(value)) + value


def u8(tag, v): return field(tag, struct.pack('>B', v))
def u32(tag, v): return field(tag, struct.pack('>I', v))
def u64(tag, v): return field(tag, struct.pack('>Q', v))
def argv(*args): return b''.join(field(1, a) for a in args)


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
    """One host connection to the agent. Frames are kept until a test takes them."""

    def __init__(self, agent):
        self.agent = agent
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(agent.sock_path)
        self.buf = b''
        self.frames = []  # received, not yet taken

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

    def wait(self, match, timeout=TIMEOUT):
        """Takes the first frame (type, channel, payload) that matches."""
        deadline = time.monotonic() + timeout
        while True:
            for i, f in enumerate(self.frames):
                if match(f):
                    return self.frames.pop(i)
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f'no matching frame; have {[(hex(t), c) for t, c, _ in self.frames]}')
            self._read(left)

    def sync(self):
        """Returns once the agent has handled every frame sent before (a PING's PONG came back),
        and the output it queued meanwhile has arrived too (a second round trip)."""
        for token in (b'sync-1', b'sync-2'):
            self.send(frame(PING, 0, token))
            self.wait(lambda f, t=token: f[0] == PONG and f[2] == t)

    def error(self, channel=0, timeout=TIMEOUT):
        _, _, p = self.wait(lambda f: f[0] == ERROR and f[1] == channel, timeout)
        return parse_tlv(ERROR, p)[1].decode()

    def collect(self, channel, grant=True, timeout=TIMEOUT, max_frame=None):
        """Output of a started exec until its EXIT: (exit fields, stdout, stderr). Grants the credit
        back as the host does, unless `grant` is false."""
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

    def run(self, channel, payload, **kw):
        """EXEC and collect until EXIT."""
        self.send(frame(EXEC, channel, payload))
        return self.collect(channel, **kw)

    def close(self):
        self.sock.close()


# ---- processes (the agent's children are ours to look at: host mode) ----

def proc_state(pid):
    """The state letter of a process (R, S, Z, ...), or None once it is gone (reaped)."""
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().rsplit(')', 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):  # gone (possibly between open and read)
        return None


def parent_of(pid):
    try:
        with open(f'/proc/{pid}/stat') as f:
            return int(f.read().rsplit(')', 1)[1].split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None


def wait_until(cond, what, timeout=TIMEOUT):
    """Polls `cond` until it returns something true (which is returned), or fails after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        assert time.monotonic() < deadline, f'{what}: not within {timeout} s'
        time.sleep(0.01)


def wait_gone(pid, what=None):
    """Until the process is gone: exited and reaped (a zombie is not gone)."""
    wait_until(lambda: proc_state(pid) is None, what or f'process {pid} reaped ({proc_state(pid)} now)')


def children(ppid, needle=b''):
    """Pids whose parent is ppid and whose command line contains `needle`, zombies included."""
    found = []
    for d in os.listdir('/proc'):
        if d.isdigit() and parent_of(int(d)) == ppid:
            try:
                with open(f'/proc/{d}/cmdline', 'rb') as f:
                    if needle in f.read():
                        found.append(int(d))
            except OSError:
                pass
    return found


SYS_WRITE = {'x86_64': '1', 'aarch64': '64'}[os.uname().machine]


def blocked_in_write(pid):
    """The process sleeps inside write(2): the pipe it writes to is full and nobody reads it."""
    try:
        with open(f'/proc/{pid}/syscall') as f:
            return proc_state(pid) == 'S' and f.read().split()[0] == SYS_WRITE
    except OSError:
        return False


# ---- the agent ----

class Agent:
    """emberd-init in host mode on a Unix socket, with `interpreter` (lines) as the pack's
    interpreter file. A child subreaper there, so orphans of its execs come to it as to PID 1."""

    def __init__(self, binary, interpreter):
        self.tmp = tempfile.mkdtemp(prefix='emberd-agent-test-')
        self.sock_path = os.path.join(self.tmp, 'ctl.sock')
        self.interp = os.path.join(self.tmp, 'interpreter')
        with open(self.interp, 'w') as f:
            f.write(''.join(line + '\n' for line in interpreter))
        self.log_file = open(os.path.join(self.tmp, 'agent.log'), 'w+')
        env = dict(os.environ, EMBERD_INTERPRETER_FILE=self.interp)
        self.proc = subprocess.Popen([binary, '--listen-unix', self.sock_path], env=env, stderr=self.log_file)
        self.pid = self.proc.pid
        wait_until(lambda: os.path.exists(self.sock_path) or self.proc.poll() is not None, 'the agent listens')
        assert self.proc.poll() is None, f'the agent exited at start: {self.log()}'

    def connect(self):
        return Client(self)

    def log(self):
        self.log_file.seek(0)
        return self.log_file.read()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log_file.close()
        subprocess.run(['rm', '-rf', self.tmp], check=False)


# ---- the runner ----

def tests_in(namespace):
    """The t_* functions of a module, in the order they are defined."""
    return [f for name, f in namespace.items() if name.startswith('t_') and callable(f)]


def run_tests(tests, call, prefix=''):
    """Runs each test through call(test); prints one line per test. (passed, failed)."""
    passed = failed = 0
    for t in tests:
        name = prefix + t.__name__.removeprefix('t_').removeprefix('test_')
        start = time.monotonic()
        try:
            call(t)
            passed += 1
            print(f'ok   {name} ({(time.monotonic() - start) * 1000:.0f} ms)', flush=True)
        except Exception:
            failed += 1
            print(f'FAIL {name}')
            traceback.print_exc(file=sys.stdout)
    return passed, failed


def main(tests, interpreter, prefix=''):
    """Runs agent tests, each t(client) on one agent: a test that returns a Client (it
    reconnected) hands that one on; after a failure the next test gets a fresh connection, so
    frames a failed test left behind do not leak into it. The agent's log is printed on failure.
    Usage of the calling script: SCRIPT path/to/emberd-init."""
    binary = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else 'build/emberd-init')
    agent = Agent(binary, interpreter)
    client = [agent.connect()]

    def call(t):
        try:
            r = t(client[0])
        except Exception:
            client[0].close()
            if agent.proc.poll() is None:
                client[0] = agent.connect()
            raise
        if isinstance(r, Client):
            client[0] = r

    try:
        passed, failed = run_tests(tests, call, prefix)
        if failed:
            print('agent log:\n' + agent.log())
    finally:
        agent.stop()
    print(f'{passed} passed, {failed} failed')
    return 1 if failed else 0
