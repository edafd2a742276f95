"""Errors a user meets first: an id the daemon does not know, a daemon that is not running, a
pack that does not exist; and the context manager, which kills its sandbox however the block ends."""
import pickle
import socket
import unittest

from emberd import EmberdError, Sandbox
from helpers import daemon_url


class Errors(unittest.TestCase):
    def test_an_unknown_sandbox_is_SANDBOX_NOT_FOUND(self):
        for sid in ("sb_aaaaaaaaaaaaaaaaaaaa", "../sandboxes", "not an id"):
            with self.assertRaises(EmberdError) as cm:
                Sandbox.connect(sid, url=daemon_url())
            e = cm.exception
            self.assertEqual((e.code, e.status), ("SANDBOX_NOT_FOUND", 404), sid)
            self.assertTrue(e.request_id, "the answer's X-Request-Id is kept")
            self.assertIn("SANDBOX_NOT_FOUND", str(e))
        again = pickle.loads(pickle.dumps(e))  # crosses process boundaries whole
        self.assertEqual((again.code, again.status, again.message, again.request_id), (e.code, e.status, e.message, e.request_id))

    def test_a_daemon_that_does_not_answer_is_DAEMON_UNREACHABLE(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()  # nothing listens there now
        with self.assertRaises(EmberdError) as cm:
            Sandbox.list(url=f"127.0.0.1:{port}")
        e = cm.exception
        self.assertEqual((e.code, e.status), ("DAEMON_UNREACHABLE", 0))
        self.assertIn(f"http://127.0.0.1:{port}", e.message)
        self.assertIn("scripts/up", e.message, "the message says how to start the daemon")

    def test_an_unknown_pack_names_the_packs(self):
        with self.assertRaises(EmberdError) as cm:
            Sandbox.create(pack="no-such-pack", url=daemon_url())
        self.assertEqual((cm.exception.code, cm.exception.status), ("UNKNOWN_LANGUAGE_PACK", 400))
        self.assertIn("python", cm.exception.message)


class ContextManager(unittest.TestCase):
    def test_the_sandbox_is_killed_when_the_block_raises(self):
        class Boom(Exception):
            pass

        with self.assertRaises(Boom):
            with Sandbox.create(pack="shell", url=daemon_url()) as sb:
                sid = sb.id
                self.assertEqual(sb.run_code("echo $((6*7))").stdout, "42\n")
                raise Boom()
        with self.assertRaises(EmberdError) as cm:
            Sandbox.connect(sid, url=daemon_url())
        self.assertEqual(cm.exception.code, "SANDBOX_NOT_FOUND")
        self.assertNotIn(sid, [s.id for s in Sandbox.list(url=daemon_url())])
        self.assertFalse(sb.kill(), "a second kill says it was gone already")


if __name__ == "__main__":
    unittest.main()
