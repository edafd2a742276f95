#!/usr/bin/env python3
"""Drives guest/session/session-server.py the way the host does (docs/protocol.md, "Sessions"),
with this machine's python3 and no VM: cells, values, output capture, caps, interrupts, and
nothing lost when the interpreter dies. Usage: session_server_test.py [path/to/session-server.py].
Prints "N passed, M failed"."""
import json
import os
import select
import signal
import subprocess
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
SERVER = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else os.path.join(HERE, 'session-server.py')
# What the host's bootstrap does once it has read the source: run it under the server's name.
BOOT = f"exec(compile(open({SERVER!r}, 'rb').read(), '<emberd-session>', 'exec'))"
TIMEOUT = 60  # seconds for anything the tests wait for; a loaded machine is slow, never wrong


def frame(kind, payload=b''):
    return b'ES' + kind + b'\0' + len(payload).to_bytes(4, 'big') + payload


class Session:
    """One server, started as the guest agent starts an exec: a process group of its own."""

    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, '-u', '-c', BOOT], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        self.buf = b''
        self.exit_status = None
        kind, payload = self.next_frame()
        assert kind == b'R', f'first frame {kind!r} {payload!r}; stderr: {self.stderr()}'
        self.ready = json.loads(payload)
        self.ids = 0

    def stderr(self):
        return self.proc.stderr.read1(65536).decode(errors='replace') if self.proc.poll() is not None else ''

    def next_frame(self):
        """The next frame, or (None, None) once the server's stdout is at EOF."""
        end = time.monotonic() + TIMEOUT
        while True:
            if len(self.buf) >= 8:
                n = int.from_bytes(self.buf[4:8], 'big')
                if len(self.buf) >= 8 + n:
                    kind, payload = self.buf[2:3], self.buf[8:8 + n]
                    self.buf = self.buf[8 + n:]
                    return kind, payload
            left = end - time.monotonic()
            assert left > 0, 'no frame from the session server in time'
            ready, _, _ = select.select([self.proc.stdout], [], [], left)
            if not ready:
                continue
            data = os.read(self.proc.stdout.fileno(), 1 << 20)
            if not data:
                assert not self.buf, f'{len(self.buf)} bytes of a partial frame at EOF'
                return None, None
            self.buf += data

    def send(self, kind, payload=b''):
        self.proc.stdin.write(frame(kind, payload))
        self.proc.stdin.flush()

    def run(self, code, cap=0, stdin=None, interrupt_on=None, kill=False):
        """Runs a cell. The end is a D frame, an X frame (the interpreter ended) or, for a server
        that does not say, the end of its output with the process's status. `interrupt_on`: once
        the cell printed these bytes, SIGINT the group (the host's timeout), then K if `kill`."""
        self.ids += 1
        req = {'id': self.ids, 'code': code, 'cap': cap, 'stdin': None}
        if stdin is not None:
            import base64
            req['stdin'] = base64.b64encode(stdin).decode()
        self.send(b'C', json.dumps(req).encode())
        out, err = bytearray(), bytearray()
        while True:
            kind, payload = self.next_frame()
            if kind == b'O':
                out += payload
                if interrupt_on is not None and interrupt_on in out:
                    interrupt_on = None
                    os.killpg(self.proc.pid, signal.SIGINT)
                    if kill:
                        self.send(b'K')
            elif kind == b'E':
                err += payload
            elif kind == b'D':
                return dict(json.loads(payload), stdout=bytes(out), stderr=bytes(err), ended=False)
            elif kind == b'X':
                return dict(json.loads(payload), stdout=bytes(out), stderr=bytes(err), ended=True)
            elif kind is None:
                status = self.proc.wait(TIMEOUT)
                code = status if status >= 0 else 128 - status
                return {'exit_code': code, 'stdout': bytes(out), 'stderr': bytes(err), 'ended': True}
            else:
                raise AssertionError(f'unexpected frame {kind!r}')

    def close(self):
        """EOF ends the server and its group; a server that does not end is killed with it."""
        try:
            if self.proc.poll() is None:
                self.proc.stdin.close()
                self.proc.wait(TIMEOUT)
        finally:
            if group_alive(self.proc.pid):
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            for f in (self.proc.stdout, self.proc.stderr):
                f.close()


def group_alive(pgid):
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


# ---- cases ----------------------------------------------------------------------------------

def test_state_survives_and_the_last_expression_is_the_value():
    s = Session()
    try:
        assert s.run('x = 6*7')['value'] is None
        r = s.run('x')
        assert (r['value'], r['exit_code'], r['ended']) == ('42', 0, False), r
    finally:
        s.close()


def test_output_of_print_fds_and_subprocesses_comes_before_done():
    s = Session()
    try:
        r = s.run('import os, subprocess, sys\nprint("a")\nsubprocess.run(["echo", "b"])\n'
                  'os.write(1, b"c\\n")\nprint("d", file=sys.stderr)\n5')
        assert (r['stdout'], r['stderr'], r['value']) == (b'a\nb\nc\n', b'd\n', '5'), r
        assert s.run('pass')['stdout'] == b'', 'nothing leaks into the next cell'
    finally:
        s.close()


def test_output_lost_when_the_interpreter_exits_with_os_exit():
    """Regression: the pipes of a cell were read by a thread of the interpreter itself, so what was
    still in them when it died (here 200,000 bytes, more than a pipe holds) died with it."""
    for i in range(50):
        s = Session()
        try:
            r = s.run('import os, sys\nsys.stdout.write("x" * 200000)\nos.write(2, b"e" * 70000)\nos._exit(3)')
            assert r['ended'], f'run {i}: the session did not end: {r}'
            assert r['exit_code'] == 3, f'run {i}: status {r["exit_code"]}'
            assert len(r['stdout']) == 200000, f'run {i}: {len(r["stdout"])} of 200000 stdout bytes arrived'
            assert len(r['stderr']) == 70000, f'run {i}: {len(r["stderr"])} of 70000 stderr bytes arrived'
        finally:
            s.close()


def test_output_lost_when_print_is_followed_by_os_exit():
    """Regression: under -u, print makes two writes ("bye", then "\\n"); the second was lost."""
    for i in range(50):
        s = Session()
        try:
            r = s.run('print("bye")\nimport os\nos._exit(0)')
            assert (r['stdout'], r['exit_code'], r['ended']) == (b'bye\n', 0, True), f'run {i}: {r}'
        finally:
            s.close()


def test_output_lost_when_the_interpreter_is_killed_by_a_signal():
    s = Session()
    try:
        r = s.run('import os, signal\nos.write(1, b"y" * 100000)\nos.kill(os.getpid(), signal.SIGKILL)')
        assert (len(r['stdout']), r['exit_code'], r['ended']) == (100000, 137, True), (len(r['stdout']), r['exit_code'])
    finally:
        s.close()


def test_a_cap_truncates_and_flags_stdout_stderr_and_value_together():
    s = Session()
    try:
        r = s.run('import sys\nfor i in range(20):\n    print("x" * 10000)\nprint("t", file=sys.stderr)\n"v" * 10', cap=65536)
        assert r['truncated'] is True, r
        assert len(r['stdout']) + len(r['stderr']) + len(r['value'] or '') == 65536
        r = s.run('len("y")', cap=65536)
        assert (r['truncated'], r['value']) == (False, '1'), r
    finally:
        s.close()


def test_stdin_of_a_cell_and_eof_without_it():
    s = Session()
    try:
        assert s.run('input().upper()', stdin=b'typed\n')['value'] == "'TYPED'"
        r = s.run('input()')
        assert r['exit_code'] == 1 and b'EOFError' in r['stderr'], r
    finally:
        s.close()


def test_sigint_to_the_group_interrupts_the_cell_and_the_session_survives():
    s = Session()
    try:
        s.run('x = 1')
        r = s.run('import time\nprint("looping")\nwhile True: time.sleep(0.01)', interrupt_on=b'looping')
        assert (r['exit_code'], r['interrupted'], r['ended']) == (130, True, False), r
        assert b'KeyboardInterrupt' in r['stderr']
        assert s.run('x')['value'] == '1', 'the pump ignored the interrupt and the state is kept'
    finally:
        s.close()


def test_kill_ends_an_interpreter_that_ignores_sigint_and_keeps_its_output():
    s = Session()
    try:
        r = s.run('import signal, sys\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nsys.stdout.write("looping\\n")\n'
                  'while True: pass', interrupt_on=b'looping', kill=True)
        assert (r['stdout'], r['exit_code'], r['signal'], r['ended']) == (b'looping\n', 137, 9, True), r
    finally:
        s.close()


def test_a_background_writer_holding_the_pipe_does_not_hold_up_the_cell():
    s = Session()
    try:
        # The cell waits until its background process has written, then ends while it runs on.
        r = s.run('import os, subprocess, tempfile, time\nd = tempfile.mkdtemp()\n'
                  'p = subprocess.Popen(["sh", "-c", "echo early; touch \\"$0\\"/w; exec sleep 30", d])\n'
                  'while not os.path.exists(d + "/w"): time.sleep(0.01)\n"done"')
        assert (r['value'], r['stdout']) == ("'done'", b'early\n'), r
        assert s.run('p.poll()')['value'] is None, 'the background process still runs'
    finally:
        s.close()


def test_bytes_that_look_like_frames_are_just_output():
    s = Session()
    try:
        fake = b'ESD\0' + (9).to_bytes(4, 'big') + b'{"id": 1}'
        r = s.run(f'import sys\nsys.stdout.buffer.write({fake!r}); sys.stdout.flush()\n"ok"')
        assert (r['stdout'], r['value']) == (fake, "'ok'"), r
    finally:
        s.close()


def test_eof_from_the_host_ends_the_server_and_what_the_session_started():
    s = Session()
    r = s.run('import subprocess\np = subprocess.Popen(["sleep", "300"])\np.pid')
    pgid = s.proc.pid
    s.close()
    end = time.monotonic() + TIMEOUT
    while group_alive(pgid) and time.monotonic() < end:
        time.sleep(0.01)
    left = group_alive(pgid)
    if left:
        os.killpg(pgid, signal.SIGKILL)
    assert not left, f'processes of the session (sleep pid {r["value"]}) outlived it'


def main():
    tests = [(n, f) for n, f in sorted(globals().items()) if n.startswith('test_')]
    passed = failed = 0
    for name, fn in tests:
        t0 = time.monotonic()
        try:
            fn()
            passed += 1
            print(f'ok   {name} ({time.monotonic() - t0:.2f}s)')
        except Exception:
            failed += 1
            print(f'FAIL {name}')
            traceback.print_exc()
    print(f'{passed} passed, {failed} failed')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
