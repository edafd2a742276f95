#!/usr/bin/env python3
"""Drives guest/session/session-server.py the way the host does (docs/protocol.md, "Sessions"),
with this machine's python3 and no VM: cells, values, output capture, caps, interrupts, and
nothing lost when the interpreter dies. Usage: session_server_test.py [path/to/session-server.py].
Prints "N passed, M failed"."""
import base64
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
        out, err, results = bytearray(), bytearray(), []
        while True:
            kind, payload = self.next_frame()
            if kind == b'B':
                results.append(json.loads(payload))
                results[-1]['after_stdout'] = len(out)  # where it came in the cell's output
            elif kind == b'O':
                out += payload
                if interrupt_on is not None and interrupt_on in out:
                    interrupt_on = None
                    os.killpg(self.proc.pid, signal.SIGINT)
                    if kill:
                        self.send(b'K')
            elif kind == b'E':
                err += payload
            elif kind == b'D':
                return dict(json.loads(payload), stdout=bytes(out), stderr=bytes(err), results=results, ended=False)
            elif kind == b'X':
                return dict(json.loads(payload), stdout=bytes(out), stderr=bytes(err), results=results, ended=True)
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


# ---- rich outputs ---------------------------------------------------------------------------

class Skip(Exception):
    """A case that cannot run here; the reason is printed."""


def png_size(data):
    """(width, height) of PNG bytes, checking the signature and that IHDR comes first."""
    assert data[:8] == b'\x89PNG\r\n\x1a\n', f'not a PNG: {data[:8]!r}'
    assert data[12:16] == b'IHDR', f'first chunk {data[12:16]!r}'
    return int.from_bytes(data[16:20], 'big'), int.from_bytes(data[20:24], 'big')


def bundles(r):
    """The cell's bundles without the test's position marker."""
    return [{k: v for k, v in b.items() if k != 'after_stdout'} for b in r['results']]


# One class per _repr_*_ method: display() of each gives that MIME type (binary ones base64) and text/plain.
REPR_CLASSES = '''
import base64
class Png:
    def _repr_png_(self): return b"\\x89PNG fake"
    def __repr__(self): return "<Png>"
class PngText:
    def _repr_png_(self): return base64.b64encode(b"already").decode()
class Jpeg:
    def _repr_jpeg_(self): return b"\\xff\\xd8jpeg"
class Svg:
    def _repr_svg_(self): return "<svg/>"
class Html:
    def _repr_html_(self): return "<b>hi</b>"
class Md:
    def _repr_markdown_(self): return "# hi"
class Latex:
    def _repr_latex_(self): return "$x^2$"
class Json:
    def _repr_json_(self): return {"a": [1, 2]}
class WithMeta:
    def _repr_html_(self): return ("<i>m</i>", {"isolated": True})
class Bundle:
    def _repr_mimebundle_(self, include=None, exclude=None):
        return {"text/html": "<p>from the bundle</p>", "text/plain": "plain from the bundle", "application/x-custom": "c"}
    def _repr_html_(self): return "<p>not used: the bundle has text/html</p>"
    def _repr_markdown_(self): return "used: the bundle has no text/markdown"
class Nothing:
    def _repr_html_(self): return None
    def __repr__(self): return "<Nothing>"
'''


def test_display_of_each_repr_method_gives_its_mime_type_and_text_plain():
    s = Session()
    try:
        assert s.run(REPR_CLASSES)['exit_code'] == 0
        r = s.run('for c in (Png, PngText, Jpeg, Svg, Html, Md, Latex, Json, WithMeta, Bundle, Nothing):\n    display(c())')
        assert (r['exit_code'], r['stderr'], r['value']) == (0, b'', None), r
        got = bundles(r)
        assert len(got) == 11, got
        assert got[0] == {'image/png': base64.b64encode(b'\x89PNG fake').decode(), 'text/plain': '<Png>', 'is_main_result': False}
        assert got[1]['image/png'] == base64.b64encode(b'already').decode(), 'base64 text is kept as it is'
        assert got[2]['image/jpeg'] == base64.b64encode(b'\xff\xd8jpeg').decode()
        assert [got[3]['image/svg+xml'], got[4]['text/html'], got[5]['text/markdown'], got[6]['text/latex']] == ['<svg/>', '<b>hi</b>', '# hi', '$x^2$']
        assert got[7]['application/json'] == {'a': [1, 2]}, 'JSON is an object, not a string'
        assert got[8]['text/html'] == '<i>m</i>', '(data, metadata) gives the data'
        assert got[9] == {'text/html': '<p>from the bundle</p>', 'text/plain': 'plain from the bundle', 'application/x-custom': 'c',
                          'text/markdown': 'used: the bundle has no text/markdown', 'is_main_result': False}, got[9]
        assert got[10] == {'text/plain': '<Nothing>', 'is_main_result': False}
        for b in got[2:8]:
            assert b['text/plain'].startswith('<__main__.'), 'text/plain is always there: the repr'
    finally:
        s.close()


def test_the_final_expression_is_the_main_result_and_value_stays_its_repr():
    s = Session()
    try:
        s.run(REPR_CLASSES)
        r = s.run('display(Md())\nHtml()')
        assert r['value'].startswith('<__main__.Html object at'), r
        assert bundles(r)[0]['is_main_result'] is False
        assert bundles(r)[1] == {'text/html': '<b>hi</b>', 'text/plain': r['value'], 'is_main_result': True}
        assert bundles(s.run('6*7')) == [{'text/plain': '42', 'is_main_result': True}]
        for code in ('x = 1', 'None', 'print(1)', 'display()'):
            assert bundles(s.run(code)) == [], f'{code}: no result'
        r = s.run('display(6, 7, raw=False)\ndisplay({"text/plain": "raw", "image/png": b"\\x01"}, raw=True)')
        assert bundles(r) == [{'text/plain': '6', 'is_main_result': False}, {'text/plain': '7', 'is_main_result': False},
                              {'text/plain': 'raw', 'image/png': 'AQ==', 'is_main_result': False}], bundles(r)
        assert bundles(s.run('display(Html, Png)')) == [{'text/plain': "<class '__main__.Html'>", 'is_main_result': False},
                                                        {'text/plain': "<class '__main__.Png'>", 'is_main_result': False}], 'a class is not rendered by its methods'
    finally:
        s.close()


def test_bundle_overtaken_by_output_written_after_it():
    """Regression: the pump forwarded what the pipes held when a B came, which could include what
    the cell printed after its display(); now display() waits for the pump's A."""
    s = Session()
    try:
        s.run(REPR_CLASSES)
        r = s.run('print("before")\ndisplay(Html())\nprint("after")\nMd()')
        assert r['stdout'] == b'before\nafter\n'
        assert [b['after_stdout'] for b in r['results']] == [len(b'before\n'), len(b'before\nafter\n')], r['results']
    finally:
        s.close()


def test_a_failing_repr_method_is_reported_and_skipped():
    s = Session()
    try:
        r = s.run('class Bad:\n    def _repr_html_(self): raise ValueError("no html")\n'
                  '    def _repr_json_(self): return {"x": object()}\n    def __repr__(self): return "<Bad>"\nBad()')
        assert r['exit_code'] == 0, r
        assert bundles(r) == [{'text/plain': '<Bad>', 'is_main_result': True}], bundles(r)
        assert b'ValueError: no html' in r['stderr'] and b'application/json dropped' in r['stderr'], r['stderr']
    finally:
        s.close()


def test_a_bundle_that_does_not_fit_the_cap_is_dropped_whole_and_flags_truncated():
    s = Session()
    try:
        s.run(REPR_CLASSES)
        big = 'class Big:\n    def _repr_png_(self): return b"p" * 300000\n'
        r = s.run(big + 'print("x" * 1000)\ndisplay(Big())\nprint("kept")\nHtml()', cap=65536)
        assert r['truncated'] is True, r
        assert r['stdout'] == b'x' * 1000 + b'\nkept\n', 'output after a dropped bundle is kept while it fits'
        assert [b['text/html'] for b in bundles(r)] == ['<b>hi</b>'], 'the small main result fits'
        r = s.run('print("y" * 65490)\nHtml()', cap=65536)
        assert (r['truncated'], bundles(r)) == (True, []), 'a bundle over what is left of the cap'
        r = s.run('display(Html())\n1', cap=65536)
        assert (r['truncated'], len(bundles(r)), r['value']) == (False, 2, '1'), r
    finally:
        s.close()


def test_pump_blocked_on_a_pipe_drained_by_a_bundle():
    """Regression: select said a pipe was readable, a bundle that came on the socket in the same
    round drained it, and the pump's next (blocking) read of it hung the session."""
    s = Session()
    try:
        s.run(REPR_CLASSES)
        for i in range(200):
            r = s.run('import sys\nprint("a", flush=True)\nprint("e", file=sys.stderr, flush=True)\ndisplay(Html())\nprint("b")\nHtml()')
            assert (r['stdout'], r['stderr'], len(r['results'])) == (b'a\nb\n', b'e\n', 2), f'run {i}: {r}'
    finally:
        s.close()


def test_an_interrupt_during_display_keeps_the_framing():
    """SIGINT while display() sends (held back until the bundle and its answer are through): the
    cell gets KeyboardInterrupt, the session goes on with whole frames."""
    for i in range(5):
        s = Session()
        try:
            r = s.run('print("looping", flush=True)\nwhile True:\n    display("x" * 100000)', interrupt_on=b'looping')
            assert (r['exit_code'], r['interrupted'], r['ended']) == (130, True, False), f'run {i}: {r["exit_code"]} {r["stderr"][-300:]}'
            assert all(b['text/plain'] == repr('x' * 100000) for b in bundles(r))
            assert bundles(s.run('1')) == [{'text/plain': '1', 'is_main_result': True}], f'run {i}'
        finally:
            s.close()


def test_display_from_a_thread_after_its_cell_ended_is_dropped():
    s = Session()
    try:
        r = s.run('import threading\ngo = threading.Event()\n'
                  't = threading.Thread(target=lambda: (go.wait(), display("late")))\nt.start()')
        assert bundles(r) == []
        r = s.run('go.set(); t.join()\n"now"')
        # The thread's display() came during this cell: it belongs to it; nothing before it leaked.
        assert [b['text/plain'] for b in bundles(r)] == ["'late'", "'now'"], bundles(r)
        assert bundles(s.run('1'))[0]['text/plain'] == '1'
    finally:
        s.close()


def test_no_cell_imports_matplotlib_unless_it_does():
    s = Session()
    try:
        s.run('display(1)')
        r = s.run('import sys, os\n(sorted(m for m in sys.modules if m.startswith("matplotlib")), os.environ.get("MPLBACKEND"))')
        assert r['value'] == "([], 'agg')", r
    finally:
        s.close()


def test_s_reseeds_random_before_the_next_cell():
    s = Session()
    try:
        seeded = s.run('import random\nrandom.seed(7)\nrandom.random()')['value']
        assert s.run('random.seed(7)\nrandom.random()')['value'] == seeded, 'the same seed, the same draw'
        s.run('random.seed(7)')
        s.send(b'S')  # what the host sends each session of a fork first
        r = s.run('from random import random as r\nr()')
        assert (r['exit_code'], r['stderr']) == (0, b''), r
        assert r['value'] != seeded, 'the seed came from the kernel, not from the cells'
    finally:
        s.close()


def need_matplotlib():
    if subprocess.run([sys.executable, '-c', 'import matplotlib.pyplot'], capture_output=True).returncode != 0:
        raise Skip(f'{sys.executable} has no matplotlib (python3-matplotlib); the VM test test/rich-outputs.test.ts covers it')


def test_matplotlib_show_sends_a_png_of_the_figure_size_and_closes_it():
    need_matplotlib()
    s = Session()
    try:
        r = s.run('import matplotlib\nimport matplotlib.pyplot as plt\nplt.figure(figsize=(3, 2), dpi=50)\nplt.plot([1, 2])\nplt.show()\n'
                  'plt.figure(figsize=(4, 1), dpi=100)\nplt.plot([2, 1])\nplt.show()\n(matplotlib.get_backend(), plt.get_fignums())')
        assert (r['exit_code'], r['value']) == (0, "('agg', [])"), r
        got = bundles(r)
        assert [b['text/plain'] for b in got[:2]] == ['<Figure size 150x100 with 1 Axes>', '<Figure size 400x100 with 1 Axes>'], got
        assert [png_size(base64.b64decode(b['image/png'])) for b in got[:2]] == [(150, 100), (400, 100)]
        assert [b['is_main_result'] for b in got] == [False, False, True]
    finally:
        s.close()


def test_matplotlib_figures_left_open_are_sent_at_the_end_of_the_cell():
    need_matplotlib()
    s = Session()
    try:
        r = s.run('import matplotlib.pyplot as plt\nfig, ax = plt.subplots(figsize=(2, 2), dpi=40)\nax.plot([1, 2])\n'
                  'plt.figure(figsize=(1, 1), dpi=30)\nax.get_title()')
        got = bundles(r)
        assert got[0] == {'text/plain': "''", 'is_main_result': True}, 'the main result, then the open figures'
        assert [png_size(base64.b64decode(b['image/png'])) for b in got[1:]] == [(80, 80), (30, 30)], got
        assert s.run('plt.get_fignums()')['value'] == '[]', 'they were closed'
        r = s.run('fig = plt.figure(figsize=(1, 2), dpi=10)\ndisplay(fig)\nfig')
        assert [(b['text/plain'], png_size(base64.b64decode(b['image/png'])), b['is_main_result']) for b in bundles(r)] == \
            [('<Figure size 10x20 with 0 Axes>', (10, 20), False), ('<Figure size 10x20 with 0 Axes>', (10, 20), True)], \
            'a figure shown by display() and as the value is not sent again at the end'
        r = s.run('plt.plot([1])\nraise ValueError("after plotting")')
        assert r['exit_code'] == 1 and len(bundles(r)) == 1, 'a cell that fails still shows its figures'
    finally:
        s.close()


def main():
    tests = [(n, f) for n, f in sorted(globals().items()) if n.startswith('test_')]
    passed = failed = 0
    for name, fn in tests:
        t0 = time.monotonic()
        try:
            fn()
            passed += 1
            print(f'ok   {name} ({time.monotonic() - t0:.2f}s)')
        except Skip as e:
            print(f'skip {name}: {e}')
        except Exception:
            failed += 1
            print(f'FAIL {name}')
            traceback.print_exc()
    print(f'{passed} passed, {failed} failed')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
