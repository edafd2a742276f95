"""The SDK against a real daemon and a real python microVM. One sandbox serves every case here
(each uses its own session names and paths); the boots are the slow part."""
import io
import os
import tempfile
import unittest

from emberd import CommandHandle, CommandResult, EmberdError, Execution, Sandbox
from helpers import coalesce, daemon_url

sb = None

# A class with an HTML repr, as pandas and IPython display objects have.
RICH_CLASS = (
    "class Card:\n"
    "    def __init__(self, n): self.n = n\n"
    "    def _repr_html_(self): return f'<b>{self.n}</b>'\n"
    "    def __repr__(self): return f'Card({self.n})'\n"
)


def setUpModule():
    global sb
    sb = Sandbox.create(pack="python", timeout_s=900, env={"FROM_CREATE": "yes"}, url=daemon_url())


def tearDownModule():
    if sb is not None:
        sb.kill()


class Exec(unittest.TestCase):
    def test_fields_of_a_finished_run(self):
        r = sb.run_code("import sys\nprint('out')\nprint('err', file=sys.stderr)\nsys.exit(3)")
        self.assertIsInstance(r, Execution)
        self.assertEqual((r.stdout, r.stderr, r.exit_code, r.timed_out, r.truncated), ("out\n", "err\n", 3, False, False))
        self.assertIsInstance(r.duration_ms, int)
        self.assertGreaterEqual(r.duration_ms, 0)
        self.assertEqual((r.results, r.value, r.session_reset, r.main_result), ([], None, False, None), "no session: no rich outputs")

    def test_env_cwd_stdin_and_the_sandbox_env(self):
        r = sb.run_code("import os, sys\nprint(os.getcwd(), os.environ['A'], os.environ['FROM_CREATE'], sys.stdin.read())", env={"A": "1"}, cwd="/tmp", stdin="typed")
        self.assertEqual(r.stdout, "/tmp 1 yes typed\n")

    def test_a_timeout_kills_the_process(self):
        r = sb.run_code("import time\ntime.sleep(600)", timeout_ms=500)
        self.assertEqual((r.timed_out, r.exit_code), (True, 137))

    def test_bad_input_is_an_error_with_the_daemons_code(self):
        with self.assertRaises(EmberdError) as cm:
            sb.run_code("print(1)", timeout_ms=-5)
        self.assertEqual((cm.exception.code, cm.exception.status), ("INVALID_REQUEST", 400))
        self.assertIn("timeout_ms", cm.exception.message)


class Sessions(unittest.TestCase):
    def test_state_survives_and_the_final_expression_is_the_value(self):
        sb.run_code("x = 6 * 7", session="values")
        r = sb.run_code("x", session="values")
        self.assertEqual(r.value, "42")
        self.assertEqual(r.results, [{"text/plain": "42", "is_main_result": True}])
        self.assertEqual(r.main_result, {"text/plain": "42", "is_main_result": True})

    def test_display_of_an_object_with_an_html_repr_is_a_rich_result(self):
        sb.run_code(RICH_CLASS, session="rich")
        r = sb.run_code("display(Card(1))\nCard(2)", session="rich")
        self.assertEqual(r.exit_code, 0, r.stderr)
        self.assertEqual(r.results, [
            {"text/html": "<b>1</b>", "text/plain": "Card(1)", "is_main_result": False},
            {"text/html": "<b>2</b>", "text/plain": "Card(2)", "is_main_result": True},
        ])
        self.assertEqual(r.value, "Card(2)")

    def test_an_exception_is_a_result_and_the_session_survives(self):
        sb.run_code("y = 1", session="raises")
        r = sb.run_code("1/0", session="raises")
        self.assertEqual(r.exit_code, 1)
        self.assertIn("ZeroDivisionError", r.stderr)
        self.assertEqual(sb.run_code("y", session="raises").value, "1")

    def test_a_bad_session_name_is_INVALID_REQUEST(self):
        with self.assertRaises(EmberdError) as cm:
            sb.run_code("1", session="bad name!")
        self.assertEqual(cm.exception.code, "INVALID_REQUEST")


class Streaming(unittest.TestCase):
    def test_callbacks_see_output_and_results_in_the_order_the_cell_made_them(self):
        sb.run_code(RICH_CLASS, session="stream")
        events = []
        r = sb.run_code(
            "import sys\nprint('a')\ndisplay(Card(1))\nprint('c', file=sys.stderr)\nCard(2)",
            session="stream",
            on_stdout=lambda d: events.append(("stdout", d)),
            on_stderr=lambda d: events.append(("stderr", d)),
            on_result=lambda b: events.append(("result", b)),
        )
        # A bundle is sent only after the cell's earlier writes are drained: the order is exact.
        self.assertEqual(coalesce(events), [
            ("stdout", "a\n"),
            ("result", {"text/html": "<b>1</b>", "text/plain": "Card(1)", "is_main_result": False}),
            ("stderr", "c\n"),
            ("result", {"text/html": "<b>2</b>", "text/plain": "Card(2)", "is_main_result": True}),
        ])
        self.assertEqual((r.stdout, r.stderr, r.exit_code, r.value), ("a\n", "c\n", 0, "Card(2)"))
        self.assertEqual([b for k, b in events if k == "result"], r.results)

    def test_a_plain_exec_streams_too(self):
        chunks = []
        r = sb.run_code("for i in range(3): print(i, flush=True)", on_stdout=chunks.append)
        self.assertEqual("".join(chunks), "0\n1\n2\n")
        self.assertEqual((r.stdout, r.exit_code, r.value, r.results), ("0\n1\n2\n", 0, None, []))

    def test_an_exception_in_a_callback_interrupts_the_cell(self):
        class Stop(Exception):
            pass

        def stop(_):
            raise Stop()

        with self.assertRaises(Stop):
            sb.run_code("import itertools\nfor i in itertools.count(): print(i, flush=True)", session="endless", on_stdout=stop)
        # Calls to a session run one at a time: this one answers only if the endless cell ended.
        self.assertEqual(sb.run_code("6 * 7", session="endless").value, "42")

    def test_an_error_before_the_stream_starts_raises_with_its_code(self):
        with self.assertRaises(EmberdError) as cm:
            sb.run_code("1", session="../x", on_stdout=print)
        self.assertEqual((cm.exception.code, cm.exception.status), ("INVALID_REQUEST", 400))


class Commands(unittest.TestCase):
    def test_a_command_line_runs_in_a_login_bash(self):
        r = sb.commands.run("echo $0 $FOO; pwd; cat; exit 4", cwd="/tmp", env={"FOO": "bar"}, stdin="in\n")
        self.assertIsInstance(r, CommandResult)
        self.assertEqual((r.stdout, r.exit_code, r.timed_out), ("bash bar\n/tmp\nin\n", 4, False))
        self.assertFalse(hasattr(r, "results"))

    def test_bytes_stdin_and_streamed_output(self):
        chunks = []
        r = sb.commands.run("od -An -tx1 | tr -d ' \\n'; echo", stdin=b"\x00\xff", on_stdout=chunks.append)
        self.assertEqual(r.stdout, "00ff\n")
        self.assertEqual("".join(chunks), r.stdout)

    def test_a_background_command_takes_stdin_and_answers_when_it_exits(self):
        h = sb.commands.run("read line; echo got:$line; echo err >&2; exit 5", background=True)
        self.assertIsInstance(h, CommandHandle)
        self.assertTrue(h.is_running(), "it waits for its stdin")
        self.assertTrue(sb.commands.connect(h.id).is_running())
        h.send_stdin("hi\n", eof=True)
        r = h.wait()
        self.assertEqual((r.stdout, r.stderr, r.exit_code, r.timed_out), ("got:hi\n", "err\n", 5, False))
        self.assertEqual(h.output(), ("got:hi\n", "err\n"))
        self.assertFalse(h.is_running())

    def test_a_background_command_killed_answers_its_signal(self):
        h = sb.commands.run("exec sleep 600", background=True)
        h.kill()
        self.assertEqual(h.wait(poll_ms=1000).exit_code, 128 + 9)
        with self.assertRaises(EmberdError) as cm:
            sb.commands.connect("p_0000000000000000").info()
        self.assertEqual((cm.exception.code, cm.exception.status), ("PROCESS_NOT_FOUND", 404))

    def test_the_pack_tools_are_on_path(self):
        self.assertEqual(sb.commands.run("python3 -c 'print(6*7)'").stdout, "42\n")


class Files(unittest.TestCase):
    def test_text_round_trip_and_the_code_sees_it(self):
        info = sb.files.write("/root/t/hello.txt", "héllo\n")
        self.assertEqual((info.path, info.size), ("/root/t/hello.txt", 7))
        self.assertEqual(sb.files.read("/root/t/hello.txt"), "héllo\n")
        self.assertEqual(sb.run_code("print(open('/root/t/hello.txt').read(), end='')").stdout, "héllo\n")

    def test_bytes_round_trip_exactly(self):
        data = bytes(range(256)) * 64
        self.assertEqual(sb.files.write("/root/b/all.bin", data).size, len(data))
        got = sb.files.read("/root/b/all.bin", format="bytes")
        self.assertIsInstance(got, bytes)
        self.assertEqual(got, data)
        self.assertEqual(sb.files.read("/root/b/all.bin")[:3], "\x00\x01\x02")
        self.assertIn("\ufffd", sb.files.read("/root/b/all.bin"), "bytes that are not UTF-8 read as U+FFFD")

    def test_a_file_object_is_streamed(self):
        data = b"x" * (1 << 20) + b"end"
        self.assertEqual(sb.files.write("/root/s/big.bin", io.BytesIO(data)).size, len(data))
        self.assertEqual(sb.files.read("/root/s/big.bin", format="bytes"), data)

    @unittest.skipUnless(os.environ.get("EMBERD_TEST_MAX_UPLOAD"), "needs the daemon's --max-upload in EMBERD_TEST_MAX_UPLOAD")
    def test_an_upload_over_the_daemons_limit_is_FILE_TOO_LARGE_however_it_is_sent(self):
        over = b"y" * (2 * int(os.environ["EMBERD_TEST_MAX_UPLOAD"]))
        with tempfile.TemporaryFile() as f:
            f.write(over)
            f.seek(0)
            # bytes and a regular file carry a Content-Length; a BytesIO is sent chunked.
            for how, data in (("bytes", over), ("a file", f), ("a stream", io.BytesIO(over))):
                with self.assertRaises(EmberdError, msg=how) as cm:
                    sb.files.write("/root/big/over.bin", data)
                self.assertEqual((cm.exception.code, cm.exception.status), ("FILE_TOO_LARGE", 413), how)
                self.assertIn("--max-upload", cm.exception.message)
        self.assertFalse(sb.files.exists("/root/big/over.bin"), "a refused upload leaves no file")

    def test_list_stat_mode_and_remove(self):
        sb.files.write("/root/l/b.txt", "b")
        sb.files.write("/root/l/a.sh", "echo a", mode=0o755)
        sb.files.write("/root/l/sub/c.txt", "c")
        entries = sb.files.list("/root/l")
        self.assertEqual([(e.name, e.type) for e in entries], [("a.sh", "file"), ("b.txt", "file"), ("sub", "dir")])
        self.assertEqual(entries[0].mode, "0755")
        self.assertEqual(entries[0].path, "/root/l/a.sh")
        self.assertEqual(sb.files.stat("/root/l/b.txt").size, 1)
        sb.files.remove("/root/l/b.txt")
        self.assertFalse(sb.files.exists("/root/l/b.txt"))
        with self.assertRaises(EmberdError) as cm:
            sb.files.remove("/root/l/sub")
        self.assertEqual((cm.exception.code, cm.exception.status), ("DIRECTORY_NOT_EMPTY", 409))
        sb.files.remove("/root/l", recursive=True)
        self.assertFalse(sb.files.exists("/root/l"))

    def test_errors_have_the_daemons_codes(self):
        with self.assertRaises(EmberdError) as cm:
            sb.files.read("/root/no/such/file")
        self.assertEqual((cm.exception.code, cm.exception.status), ("FILE_NOT_FOUND", 404))
        with self.assertRaises(EmberdError) as cm:
            sb.files.write("relative.txt", "x")
        self.assertEqual(cm.exception.code, "INVALID_PATH")
        with self.assertRaises(ValueError):
            sb.files.read("/root/t/hello.txt", format="json")


class Lifecycle(unittest.TestCase):
    def test_set_timeout_connect_and_list(self):
        sb.set_timeout(600)
        self.assertEqual(sb.info["timeout_s"], 600)
        same = Sandbox.connect(sb.id, url=daemon_url())
        self.assertEqual((same.id, same.info["state"], same.pack), (sb.id, "ready", "python"))
        self.assertEqual(same.info["timeout_s"], 600)
        self.assertEqual(same.run_code("print(1)").stdout, "1\n")
        self.assertIn(sb.id, [s.id for s in Sandbox.list(url=daemon_url())])
        self.assertTrue(sb.is_running())
        self.assertIsInstance(sb.get_info()["vmm_pid"], int)


if __name__ == "__main__":
    unittest.main()
