"""Where the SDK finds the daemon and its token (as src/sdk/client.ts and src/state-dir.ts do):
against a tiny local HTTP server that records what it was sent, and against a real daemon
started with --auth on (EMBERD_TEST_AUTH_URL, its token file in EMBERD_TEST_AUTH_STATE_HOME)."""
import json
import os
import tempfile
import threading
import unittest
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from unittest import mock

from emberd import EmberdError, Sandbox
from emberd.discovery import default_token_file, resolve_url

# Variables that would change what is discovered: none leak in from the environment of the run.
DISCOVERY_VARS = ("EMBERD_URL", "EMBERD_ADDR", "EMBERD_TOKEN", "EMBERD_TOKEN_FILE", "XDG_STATE_HOME")


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in DISCOVERY_VARS}
    env.update(extra)
    return mock.patch.dict(os.environ, env, clear=True)


class Recorder(BaseHTTPRequestHandler):
    """Answers GET /sandboxes with an empty list; under /broken/ what a proxy with no daemon behind
    it would: an HTML 502."""

    seen = []

    def do_GET(self):
        Recorder.seen.append({"path": self.path, "authorization": self.headers.get("authorization")})
        if self.path.startswith("/broken/"):
            body, status, ctype = b"<html>bad gateway</html>", 502, "text/html"
        elif self.headers.get("authorization") == "Bearer wrong":
            body, status, ctype = json.dumps({"error": {"code": "UNAUTHORIZED", "message": "not this daemon's token"}}).encode(), 401, "application/json"
        else:
            body, status, ctype = b'{"sandboxes": []}', 200, "application/json"
        self.send_response(status)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(body)))
        self.send_header("x-request-id", "req-7")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Discovery(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
        cls.addr = f"127.0.0.1:{cls.server.server_address[1]}"
        threading.Thread(target=cls.server.serve_forever, daemon=True).start()
        cls.tmp = tempfile.TemporaryDirectory()

    @classmethod
    def tearDownClass(cls):
        cls.server.shutdown()
        cls.server.server_close()
        cls.tmp.cleanup()

    def sent(self, **kwargs):
        """The Authorization header a Sandbox.list(**kwargs) sent."""
        Recorder.seen.clear()
        self.assertEqual(Sandbox.list(**kwargs), [])
        self.assertEqual(len(Recorder.seen), 1)
        return Recorder.seen[0]["authorization"]

    def token_file(self, name, content, mode=0o600):
        path = os.path.join(self.tmp.name, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(content)
        os.chmod(path, mode)
        return path

    def test_the_address_comes_from_the_argument_EMBERD_URL_EMBERD_ADDR_or_the_default(self):
        with clean_env():
            self.assertEqual(resolve_url(), "http://127.0.0.1:7777")
        with clean_env(EMBERD_ADDR="10.0.0.1:9"):
            self.assertEqual(resolve_url(), "http://10.0.0.1:9")
        with clean_env(EMBERD_ADDR="10.0.0.1:9", EMBERD_URL="https://box:8443/"):
            self.assertEqual(resolve_url(), "https://box:8443")
            self.assertEqual(resolve_url("h:1"), "http://h:1")
        with clean_env(EMBERD_URL=self.addr):
            self.assertIsNone(self.sent(), "no token anywhere: none is sent")
        with clean_env(), self.assertRaises(EmberdError) as cm:
            Sandbox.list(url="ftp://x")
        self.assertEqual(cm.exception.code, "INVALID_URL")

    def test_the_token_comes_from_the_argument_then_EMBERD_TOKEN_then_the_token_file(self):
        named = self.token_file("named/token", "from-file\n")
        with clean_env(EMBERD_TOKEN="from-env", EMBERD_TOKEN_FILE=named):
            self.assertEqual(self.sent(url=self.addr, token="given"), "Bearer given")
            self.assertIsNone(self.sent(url=self.addr, token=""), 'token="" sends none')
            self.assertEqual(self.sent(url=self.addr), "Bearer from-env")
        with clean_env(EMBERD_TOKEN_FILE=named):
            self.assertEqual(self.sent(url=self.addr), "Bearer from-file")

    def test_the_default_token_file_is_the_daemons(self):
        state = os.path.join(self.tmp.name, "xdg")
        with clean_env(XDG_STATE_HOME=state), mock.patch("os.geteuid", return_value=1000):
            self.assertEqual(default_token_file(), os.path.join(state, "emberd", "token"))
            self.assertIsNone(self.sent(url=self.addr), "no default token file: a daemon without auth")
            self.token_file("xdg/emberd/token", "from-default\n")
            self.assertEqual(self.sent(url=self.addr), "Bearer from-default")
        with clean_env(XDG_STATE_HOME=state), mock.patch("os.geteuid", return_value=0):
            self.assertEqual(default_token_file(), "/var/lib/emberd/token")

    def test_an_unreadable_EMBERD_TOKEN_FILE_is_an_error(self):
        missing = os.path.join(self.tmp.name, "missing")
        with clean_env(EMBERD_TOKEN_FILE=missing), self.assertRaises(EmberdError) as cm:
            Sandbox.list(url=self.addr)
        self.assertEqual((cm.exception.code, cm.exception.status), ("TOKEN_UNREADABLE", 0))
        self.assertIn(missing, cm.exception.message)

    def test_answers_that_are_errors(self):
        with clean_env(), self.assertRaises(EmberdError) as cm:
            Sandbox.list(url=self.addr, token="wrong")
        self.assertEqual((cm.exception.code, cm.exception.status, cm.exception.request_id), ("UNAUTHORIZED", 401, "req-7"))
        with clean_env(), self.assertRaises(EmberdError) as cm:
            Sandbox.list(url=f"http://{self.addr}/broken")  # a URL's path prefixes every request's
        self.assertEqual((cm.exception.code, cm.exception.status), ("HTTP_ERROR", 502))
        self.assertEqual(Recorder.seen[-1]["path"], "/broken/sandboxes")
        self.assertIn("bad gateway", cm.exception.message)


@unittest.skipUnless(os.environ.get("EMBERD_TEST_AUTH_URL"), "needs a daemon with --auth on (test/sdk-python.test.ts starts one)")
class RealDaemonWithAuth(unittest.TestCase):
    def test_without_the_token_UNAUTHORIZED_with_the_discovered_token_served(self):
        url = os.environ["EMBERD_TEST_AUTH_URL"]
        state = os.environ["EMBERD_TEST_AUTH_STATE_HOME"]
        with clean_env(), self.assertRaises(EmberdError) as cm:
            Sandbox.list(url=url)
        self.assertEqual((cm.exception.code, cm.exception.status), ("UNAUTHORIZED", 401))
        self.assertIn("token", cm.exception.message)
        with clean_env(), self.assertRaises(EmberdError) as cm:
            Sandbox.list(url=url, token="0" * 64)
        self.assertEqual(cm.exception.code, "UNAUTHORIZED")
        # The daemon's token file where a non-root user's daemon keeps it: found with no settings.
        with clean_env(XDG_STATE_HOME=state), mock.patch("os.geteuid", return_value=1000):
            self.assertEqual(Sandbox.list(url=url), [])
        with clean_env(EMBERD_TOKEN_FILE=os.path.join(state, "emberd", "token")):
            self.assertEqual(Sandbox.list(url=url), [])


if __name__ == "__main__":
    unittest.main()
