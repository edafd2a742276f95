"""pause(), resume() and fork() against a real daemon and real microVMs. One sandbox, created with
on_timeout="pause" and auto_resume=False, serves every case (its two forks are the other boots)."""
import unittest

from emberd import EmberdError, Sandbox
from helpers import daemon_url

sb = None


def setUpModule():
    global sb
    sb = Sandbox.create(pack="python", timeout_s=900, on_timeout="pause", auto_resume=False, url=daemon_url())
    sb.files.write("/root/kept.txt", "still here")
    sb.run_code("x = 41", session="s")


def tearDownModule():
    if sb is not None:
        sb.kill()


class Pause(unittest.TestCase):
    def test_1_the_create_options_are_in_the_summary(self):
        self.assertEqual((sb.info["on_timeout"], sb.info["auto_resume"], sb.info["paused"], sb.info["forked_from"]), ("pause", False, None, None))

    def test_2_pause_then_resume_keeps_a_file_and_a_session_variable(self):
        info = sb.pause()
        self.assertIs(info, sb.info)
        self.assertEqual(info["state"], "paused")
        p = info["paused"]
        self.assertGreater(p["bytes"], 0)
        self.assertIsInstance(p["pause_ms"], int)
        self.assertTrue(p["paused_at"])
        self.assertEqual(sb.get_info()["state"], "paused")
        self.assertFalse(sb.is_running())
        self.assertEqual(sb.pause()["state"], "paused", "a paused sandbox is returned as it is")

        with self.assertRaises(EmberdError) as cm:  # auto_resume=False: calls do not resume it
            sb.run_code("print(1)")
        self.assertEqual((cm.exception.code, cm.exception.status), ("SANDBOX_PAUSED", 409))
        self.assertIn("resume", cm.exception.message)

        info = sb.resume(timeout_s=600)
        self.assertEqual((info["state"], info["boot_mode"], info["paused"], info["timeout_s"]), ("ready", "resume", None, 600))
        self.assertEqual(sb.files.read("/root/kept.txt"), "still here")
        self.assertEqual(sb.run_code("x + 1", session="s").value, "42")
        self.assertEqual(sb.resume()["state"], "ready", "a running sandbox is returned as it is")

    def test_3_forks_see_the_parents_state_and_diverge(self):
        forks = sb.fork(2)
        try:
            self.assertEqual(len(forks), 2)
            for f in forks:
                self.assertIsInstance(f, Sandbox)
                self.assertNotEqual(f.id, sb.id)
                self.assertEqual((f.info["state"], f.info["boot_mode"], f.info["forked_from"], f.pack), ("ready", "fork", sb.id, "python"))
                self.assertEqual(f.files.read("/root/kept.txt"), "still here")
                self.assertEqual(f.run_code("x", session="s").value, "41")
            forks[0].run_code("x = 1", session="s")
            forks[1].files.write("/root/kept.txt", "fork 1")
            self.assertEqual([s.run_code("x", session="s").value for s in (*forks, sb)], ["1", "41", "41"])
            self.assertEqual([s.files.read("/root/kept.txt") for s in (*forks, sb)], ["still here", "fork 1", "still here"])
        finally:
            for f in forks:
                self.assertTrue(f.kill())

    def test_4_errors_carry_the_daemons_code(self):
        for count in (0, 17):
            with self.assertRaises(EmberdError) as cm:
                sb.fork(count)
            self.assertEqual((cm.exception.code, cm.exception.status), ("INVALID_REQUEST", 400), count)
        with self.assertRaises(EmberdError) as cm:
            sb.resume(timeout_s=-1)
        self.assertEqual(cm.exception.code, "INVALID_REQUEST")
        with self.assertRaises(EmberdError) as cm:
            Sandbox.create(pack="python", on_timeout="hibernate", url=daemon_url())
        self.assertEqual((cm.exception.code, cm.exception.status), ("INVALID_REQUEST", 400))
        gone = Sandbox({"id": "sb_aaaaaaaaaaaaaaaaaaaa", "language_pack": "python"}, sb._conn)
        for call in (gone.pause, gone.resume, gone.fork):
            with self.assertRaises(EmberdError) as cm:
                call()
            self.assertEqual((cm.exception.code, cm.exception.status), ("SANDBOX_NOT_FOUND", 404), call.__name__)


if __name__ == "__main__":
    unittest.main()
