#!/usr/bin/env python3
"""Proxied TCP connections (docs/protocol.md, "CONNECT, CONNECTED, CLOSE"): the real emberd-init
in host mode connects to servers this test runs on 127.0.0.1 and carries their bytes over the
protocol, under flow control, with half-close both ways, CLOSE rules and the channel namespace it
shares with execs. Usage: portfwd_test.py path/to/emberd-init. Prints "N passed, M failed"."""
import http.server
import os
import select
import socket
import sys
import tempfile
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (EXEC, ERROR, HELLO, HELLO_ACK, SIGNAL, STDIN, STDOUT, TIMEOUT, WINDOW,  # noqa: E402
                     argv, frame, main, parse_tlv, tests_in, u32, wait_until)

CONNECT, CONNECTED, CLOSE = 0x18, 0x19, 0x1A
INITIAL_WINDOW = 262144


# ---- servers on 127.0.0.1 (the test's own) ----

class Server:
    """A listener on 127.0.0.1 running handler(conn) in a thread per accepted connection (none when
    handler is None: connections then wait in the backlog). close() ends every one of them."""

    def __init__(self, handler=None, backlog=16):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(('127.0.0.1', 0))
        self.sock.listen(backlog)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.handler = handler
        if handler:
            threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # close()
                return
            self.conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        try:
            self.handler(conn)
        except OSError:  # close() took the socket away
            pass

    def close(self):
        for s in [self.sock] + self.conns:
            try:
                s.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in accept, recv or send
            except OSError:
                pass
            s.close()


def read_to_eof(conn):
    data = bytearray()
    while chunk := conn.recv(65536):
        data += chunk
    return bytes(data)


def echo(conn):
    try:
        while chunk := conn.recv(65536):
            conn.sendall(chunk)
        conn.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def free_port():
    """A port nothing listens on (bound, then closed: nothing else here binds 127.0.0.1)."""
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ---- the host's side ----

def connect(c, ch, port, then=b''):
    c.send(frame(CONNECT, ch, u32(1, port)) + then)


def connected(c, ch):
    ftype, _, p = c.wait(lambda f: f[1] == ch)
    assert ftype == CONNECTED, (hex(ftype), p)


def pump(c, ch, data=b'', eof=True):
    """Sends `data` as STDIN within the credit the guest grants (then an empty STDIN when `eof`),
    takes STDOUT and grants it back as consumed, until the guest's CLOSE. Returns (stdout,
    CLOSE fields, the kinds of frame seen in order: 'connected', 'data', 'eof', 'close')."""
    credit, sent, out, seen = INITIAL_WINDOW, 0, bytearray(), []
    while True:
        while sent < len(data) and credit > 0:
            n = min(credit, 65536, len(data) - sent)
            c.send(frame(STDIN, ch, data[sent:sent + n]))
            sent, credit = sent + n, credit - n
        if sent == len(data) and eof:
            c.send(frame(STDIN, ch, b''))
            eof = False
        ftype, _, p = c.wait(lambda f: f[1] == ch)
        if ftype == STDOUT:
            assert len(p) <= 65536, len(p)
            if p:
                out += p
                c.send(frame(WINDOW, ch, u32(1, len(p))))
            seen.append('data' if p else 'eof')
        elif ftype == WINDOW:
            credit += parse_tlv(WINDOW, p)[1]
        elif ftype == CONNECTED:
            seen.append('connected')
        elif ftype == CLOSE:
            seen.append('close')
            return bytes(out), parse_tlv(CLOSE, p), seen
        else:
            raise AssertionError(f'{hex(ftype)} on channel {ch}: {p}')


def squash(seen):
    """'data' runs as one: the frames' split is the guest's business."""
    return [k for i, k in enumerate(seen) if k != 'data' or i == 0 or seen[i - 1] != 'data']


def quiet(c, ch):
    """Nothing more arrives on the channel: every frame the agent queued before our round trip
    has arrived by its end (harness Client.sync)."""
    c.sync()
    assert not any(f[1] == ch for f in c.frames), [(hex(t), len(p)) for t, ch2, p in c.frames if ch2 == ch]


# ---- tests ----

def t_hello_says_port(c):
    c.send(frame(HELLO, 0, u32(1, 1)))
    ack = parse_tlv(HELLO_ACK, c.wait(lambda f: f[0] == HELLO_ACK)[2])
    assert b'port' in ack[3], ack


def t_http_server(c):
    """A real HTTP server in the guest's place: the request goes in, the response comes out, the
    server's close is an empty STDOUT, the host's an empty STDIN, and then CLOSE without a code."""
    root = tempfile.mkdtemp(prefix='emberd-portfwd-')
    with open(os.path.join(root, 'hello.txt'), 'w') as f:
        f.write('hello from the guest\n')

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=root, **kw)

        def log_message(self, *a):
            pass

    httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Quiet)
    threading.Thread(target=httpd.serve_forever, kwargs={'poll_interval': 0.05}, daemon=True).start()
    try:
        connect(c, 1, httpd.server_address[1])
        out, close, seen = pump(c, 1, b'GET /hello.txt HTTP/1.0\r\nHost: x\r\n\r\n')
        assert out.startswith(b'HTTP/1.0 200 ') and out.endswith(b'\r\n\r\nhello from the guest\n'), out
        assert close == {} and squash(seen) == ['connected', 'data', 'eof', 'close'], (close, seen)
    finally:
        httpd.shutdown()
        httpd.server_close()


def t_echo_1mib_under_flow_control(c):
    """1 MiB through an echo server, sent right after CONNECT (queued until connected) and only
    within the credit the guest grants, read back only as we grant: more than either window, so
    it passes only if credit flows both ways."""
    srv = Server(echo)
    try:
        data = os.urandom(1 << 20)
        connect(c, 2, srv.port)
        out, close, seen = pump(c, 2, data)
        assert out == data, (len(out), len(data))
        assert close == {} and squash(seen) == ['connected', 'data', 'eof', 'close'], (close, seen)
    finally:
        srv.close()


def t_stdin_right_after_connect_is_queued(c):
    got = []

    def reader(conn):
        got.append(read_to_eof(conn))
        conn.close()
    srv = Server(reader)
    try:
        connect(c, 3, srv.port, frame(STDIN, 3, b'early ') + frame(STDIN, 3, b'bytes') + frame(STDIN, 3, b''))
        out, close, seen = pump(c, 3, eof=False)
        wait_until(lambda: got, 'the server read to EOF')
        assert got == [b'early bytes'] and close == {}, (got, close)
    finally:
        srv.close()


def t_refused(c):
    """Nothing listens: CLOSE CONNECT_REFUSED and no CONNECTED; the STDIN the host sent meanwhile
    is dropped without a word, and the channel is free again."""
    port = free_port()
    connect(c, 4, port, frame(STDIN, 4, b'lost') + frame(WINDOW, 4, u32(1, 10)))
    ftype, _, p = c.wait(lambda f: f[1] == 4)
    assert ftype == CLOSE, hex(ftype)
    assert parse_tlv(CLOSE, p) == {1: b'CONNECT_REFUSED', 2: b'Connection refused'}, p
    quiet(c, 4)
    srv = Server(echo)
    try:
        connect(c, 4, srv.port)
        assert pump(c, 4, b'again')[0] == b'again'
    finally:
        srv.close()


def t_half_close_by_the_host(c):
    """An empty STDIN shuts the socket's write side once the queue is written: the server sees EOF
    and can still answer; then its close is the empty STDOUT and CLOSE follows."""
    def count(conn):
        n = len(read_to_eof(conn))
        conn.sendall(b'got %d bytes' % n)
        conn.close()
    srv = Server(count)
    try:
        connect(c, 5, srv.port)
        out, close, seen = pump(c, 5, b'x' * 300000)
        assert out == b'got 300000 bytes' and close == {}, (out, close)
        assert squash(seen) == ['connected', 'data', 'eof', 'close'], seen
    finally:
        srv.close()


def t_half_close_by_the_server(c):
    """The server shuts its write side first: the host gets the empty STDOUT, no CLOSE yet, and
    can still send; CLOSE comes once the host's empty STDIN was applied."""
    got = []

    def banner(conn):
        conn.sendall(b'banner')
        conn.shutdown(socket.SHUT_WR)
        got.append(read_to_eof(conn))
        conn.close()
    srv = Server(banner)
    try:
        connect(c, 6, srv.port)
        connected(c, 6)
        out = b''
        while True:
            ftype, _, p = c.wait(lambda f: f[1] == 6)
            assert ftype == STDOUT, hex(ftype)
            if not p:
                break
            out += p
        assert out == b'banner', out
        quiet(c, 6)  # half open: no CLOSE while the host may still write
        c.send(frame(STDIN, 6, b'late words'))
        out, close, seen = pump(c, 6)
        wait_until(lambda: got, 'the server read to EOF')
        assert got == [b'late words'] and close == {} and seen == ['close'], (got, close, seen)
    finally:
        srv.close()


def t_host_close_mid_stream(c):
    """CLOSE from the host closes the socket at once (the server's next send fails), the guest
    answers CLOSE without a code, and frames still in flight for the channel are dropped."""
    ended = threading.Event()

    def talker(conn):
        try:
            while True:
                conn.sendall(b'y' * 65536)
        except OSError:
            ended.set()
    srv = Server(talker)
    try:
        connect(c, 7, srv.port)
        connected(c, 7)
        c.wait(lambda f: f[1] == 7 and f[0] == STDOUT)
        c.send(frame(CLOSE, 7))
        c.send(frame(WINDOW, 7, u32(1, 1000)) + frame(STDIN, 7, b'z') + frame(CLOSE, 7))
        ftype, _, p = c.wait(lambda f: f[1] == 7 and f[0] != STDOUT)
        assert ftype == CLOSE and parse_tlv(CLOSE, p) == {}, (hex(ftype), p)
        assert ended.wait(TIMEOUT), 'the server sees its connection end'
        c.frames = [f for f in c.frames if not (f[1] == 7 and f[0] == STDOUT)]
        quiet(c, 7)
    finally:
        srv.close()


def t_server_reset_is_close_reset(c):
    """The server resets the connection (SO_LINGER 0): CLOSE with code RESET."""
    import struct

    def reset(conn):
        conn.recv(1)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
        conn.close()
    srv = Server(reset)
    try:
        connect(c, 8, srv.port, frame(STDIN, 8, b'!'))
        out, close, seen = pump(c, 8, eof=False)
        assert close.get(1) == b'RESET' and close.get(2), close
    finally:
        srv.close()


def t_channel_in_use_both_ways(c):
    srv = Server(echo)
    try:
        c.send(frame(EXEC, 50, argv('sleep', '30')))
        connect(c, 50, srv.port)
        assert c.error(50) == 'CHANNEL_IN_USE'
        connect(c, 51, srv.port)
        connected(c, 51)
        c.send(frame(EXEC, 51, argv('true')))
        assert c.error(51) == 'CHANNEL_IN_USE'
        connect(c, 51, srv.port)
        assert c.error(51) == 'CHANNEL_IN_USE'
        # SIGNAL and RESIZE are an exec's, CLOSE a connection's.
        c.send(frame(SIGNAL, 51, u32(1, 9)))
        assert c.error(51) == 'NO_SUCH_CHANNEL'
        c.send(frame(CLOSE, 50))
        assert c.error(50) == 'NO_SUCH_CHANNEL'
        assert pump(c, 51, b'still mine')[0] == b'still mine'
        c.send(frame(SIGNAL, 50, u32(1, 9)))
        c.wait(lambda f: f[1] == 50 and f[0] == 0x14)  # EXIT
    finally:
        srv.close()


def t_bad_requests(c):
    for payload in (u32(1, 0), u32(1, 65536), b'', b'\x01\x00\x00\x00\x02\x1f\x40'):
        c.send(frame(CONNECT, 52, payload))
        assert c.error(52) == 'BAD_PAYLOAD', payload
    c.send(frame(CONNECT, 0, u32(1, 80)))
    assert c.error(0) == 'BAD_CHANNEL'
    c.send(frame(CLOSE, 53))
    assert c.error(53) == 'NO_SUCH_CHANNEL'
    c.send(frame(STDIN, 53, b'x'))
    assert c.error(53) == 'NO_SUCH_CHANNEL'
    c.send(frame(CONNECTED, 53))
    assert c.error(53) == 'UNKNOWN_TYPE'  # a guest->host message


def t_stdin_beyond_credit_is_close_flow_control(c):
    srv = Server()  # never accepted, never read
    try:
        connect(c, 54, srv.port)
        connected(c, 54)
        c.send(frame(STDIN, 54, b'x' * (INITIAL_WINDOW + 1)))
        ftype, _, p = c.wait(lambda f: f[1] == 54 and f[0] != WINDOW)
        assert ftype == CLOSE and parse_tlv(CLOSE, p)[1] == b'FLOW_CONTROL', (hex(ftype), p)
    finally:
        srv.close()


class Flood:
    """A server writing as fast as its peer reads; `blocked` while its socket buffer is full (the
    peer stopped reading), `sent` counts what the kernel took."""

    def __init__(self):
        self.blocked, self.sent = False, 0
        self.srv = Server(self.run)

    def run(self, conn):
        conn.setblocking(False)
        try:
            while True:
                try:
                    self.sent += conn.send(b'f' * 65536)
                except BlockingIOError:
                    self.blocked = True
                    select.select([], [conn], [])
                    self.blocked = False
        except OSError:
            pass


def t_flood_without_credit_stays_bounded(c):
    """The guest reads the socket only while the host has credit: the initial window and not a
    byte more, however much the server has written, then exactly what the host grants."""
    fl = Flood()
    try:
        connect(c, 55, fl.srv.port)
        connected(c, 55)
        got = 0
        while got < INITIAL_WINDOW:
            ftype, _, p = c.wait(lambda f: f[1] == 55)
            assert ftype == STDOUT and 0 < len(p) <= 65536, (hex(ftype), len(p))
            got += len(p)
        wait_until(lambda: fl.blocked, 'the server blocks: the guest stopped reading')
        quiet(c, 55)
        assert got == INITIAL_WINDOW and fl.sent > got, (got, fl.sent)
        c.send(frame(WINDOW, 55, u32(1, 100000)))
        while got < INITIAL_WINDOW + 100000:
            ftype, _, p = c.wait(lambda f: f[1] == 55)
            assert ftype == STDOUT, hex(ftype)
            got += len(p)
        quiet(c, 55)
        assert got == INITIAL_WINDOW + 100000, got
        c.send(frame(CLOSE, 55))
        c.wait(lambda f: f[1] == 55 and f[0] == CLOSE)
    finally:
        fl.srv.close()


def t_flood_to_a_stalled_host_keeps_memory_bounded(c):
    """The host grants plenty but stops reading: the agent stops reading the socket once its
    output queue is full, so its memory stays small while the server blocks."""
    fl = Flood()
    try:
        connect(c, 56, fl.srv.port, frame(WINDOW, 56, u32(1, 0xffffffff)))
        wait_until(lambda: fl.blocked, 'the server blocks: the agent stopped reading')
        with open(f'/proc/{c.agent.pid}/status') as f:
            rss_kb = int([line for line in f if line.startswith('VmRSS')][0].split()[1])
        c.send(frame(CLOSE, 56))
        c.wait(lambda f: f[1] == 56 and f[0] == CLOSE)
        c.frames = [f for f in c.frames if f[1] != 56]
        assert rss_kb < 8 * 1024 and fl.sent > INITIAL_WINDOW, (rss_kb, fl.sent)
    finally:
        fl.srv.close()


def t_too_many_connections(c):
    srv = Server(backlog=512)  # the kernel completes them in the backlog
    try:
        chans = range(1000, 1256)
        for ch in chans:
            connect(c, ch, srv.port)
        for ch in chans:
            connected(c, ch)
        connect(c, 1256, srv.port)
        ftype, _, p = c.wait(lambda f: f[1] == 1256)
        assert ftype == CLOSE and parse_tlv(CLOSE, p)[1] == b'TOO_MANY_CONNECTIONS', (hex(ftype), p)
        for ch in chans:
            c.send(frame(CLOSE, ch))
        for ch in chans:
            c.wait(lambda f, ch=ch: f[1] == ch and f[0] == CLOSE)
        connect(c, 1256, srv.port)
        connected(c, 1256)
        c.send(frame(CLOSE, 1256))
        c.wait(lambda f: f[1] == 1256 and f[0] == CLOSE)
    finally:
        srv.close()


def t_host_disconnect_closes_every_connection(c):
    ends = []
    srv = Server(lambda conn: ends.append(read_to_eof(conn)))
    try:
        for ch in (60, 61, 62):
            connect(c, ch, srv.port, frame(STDIN, ch, b'hi %d' % ch))
            connected(c, ch)
        c.close()
        wait_until(lambda: len(ends) == 3, 'every server connection sees EOF')
        assert sorted(ends) == [b'hi 60', b'hi 61', b'hi 62'], ends
        c = c.agent.connect()  # and the next host finds the channels free
        connect(c, 60, srv.port)
        connected(c, 60)
        c.send(frame(CLOSE, 60))
        c.wait(lambda f: f[1] == 60 and f[0] == CLOSE)
        return c
    finally:
        srv.close()


if __name__ == '__main__':
    sys.exit(main(tests_in(globals()), ['sh', '-c']))
