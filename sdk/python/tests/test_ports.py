"""expose_port(), list_ports(), get_port(), close_port() and get_host() against a real daemon: the
fixture server (test/fixtures/port-server.py) started in one sandbox, fetched with urllib through
the URL the SDK returns. One sandbox serves every case."""
import json
import unittest
import urllib.error
import urllib.request

from emberd import EmberdError, Sandbox
from helpers import SDK_ROOT, daemon_url

SERVER = (SDK_ROOT.parent.parent / "test" / "fixtures" / "port-server.py").read_text(encoding="utf-8")
PROBE = """import socket, time
for i in range(600):
    try:
        socket.create_connection(("127.0.0.1", 8000), 1).close(); break
    except OSError: time.sleep(0.05)
else: raise SystemExit("the server never listened")"""

sb = None


def setUpModule():
    global sb
    sb = Sandbox.create(pack="python", timeout_s=900, url=daemon_url())
    sb.files.write("/root/srv.py", SERVER)
    sb.commands.run("python3 /root/srv.py 8000", background=True)
    r = sb.run_code(PROBE, timeout_ms=60_000)
    if r.exit_code != 0:
        raise RuntimeError(f"the fixture server did not start: {r.stderr}")


def tearDownModule():
    if sb is not None:
        sb.kill()


def get(url):
    """(status, decoded JSON) of a GET; an HTTP error's body is the daemon's JSON error."""
    try:
        with urllib.request.urlopen(url, timeout=60) as res:
            return res.status, json.loads(res.read())
    except urllib.error.HTTPError as e:
        with e:
            return e.code, json.loads(e.read())


class Ports(unittest.TestCase):
    def test_1_expose_then_fetch_through_the_url_with_urllib(self):
        p = sb.expose_port(8000)
        self.assertEqual(p["port"], 8000)
        self.assertEqual(p["path"], f"/sandboxes/{sb.id}/ports/8000/")
        self.assertEqual(p["url"], f"{daemon_url().rstrip('/')}/sandboxes/{sb.id}/ports/8000/")
        self.assertRegex(p["host"], r"^127\.0\.0\.1:\d+$", "a TCP listener by default on a daemon without auth")
        status, echo = get(p["url"] + "from/python?q=1")
        self.assertEqual(status, 200)
        self.assertEqual(echo["path"], "/from/python?q=1")
        self.assertEqual(echo["headers"]["host"], "127.0.0.1:8000")
        self.assertEqual(sb.expose_port(8000)["host"], p["host"], "exposing twice returns the same port")
        self.assertEqual(sb.get_host(8000), p["url"])
        self.assertIsNone(sb.expose_port(8001, tcp=False)["host"], "tcp=False: the path only")

    def test_2_get_host_exposes_and_nothing_listening_is_502(self):
        url = sb.get_host(9999)
        self.assertTrue(url.endswith(f"/sandboxes/{sb.id}/ports/9999/"), url)
        status, body = get(url)
        self.assertEqual((status, body["error"]["code"]), (502, "PORT_NOT_LISTENING"))

    def test_3_list_and_get_with_counters(self):
        self.assertEqual([p["port"] for p in sb.list_ports()], [8000, 8001, 9999])
        p = sb.get_port(8000)
        self.assertEqual(p["connections_total"], 1, p)
        self.assertGreater(p["bytes_out"], 0)

    def test_4_close_then_the_url_is_404(self):
        url = sb.get_port(9999)["url"]
        self.assertTrue(sb.close_port(9999))
        self.assertFalse(sb.close_port(9999), "not exposed any more")
        status, body = get(url)
        self.assertEqual((status, body["error"]["code"]), (404, "PORT_NOT_FOUND"))
        self.assertEqual([p["port"] for p in sb.list_ports()], [8000, 8001])

    def test_5_errors_carry_the_daemons_code(self):
        with self.assertRaises(EmberdError) as cm:
            sb.get_port(7000)
        self.assertEqual((cm.exception.code, cm.exception.status), ("PORT_NOT_FOUND", 404))
        for bad in (0, 70000):
            with self.assertRaises(EmberdError) as cm:
                sb.expose_port(bad)
            self.assertEqual((cm.exception.code, cm.exception.status), ("INVALID_REQUEST", 400), bad)
        more = list(range(9000, 9030))  # with 8000 and 8001: the 32 a sandbox may have
        try:
            for port in more:
                sb.expose_port(port, tcp=False)
            with self.assertRaises(EmberdError) as cm:
                sb.expose_port(9100)
            self.assertEqual((cm.exception.code, cm.exception.status), ("TOO_MANY_PORTS", 429))
        finally:
            for port in more:
                sb.close_port(port)
        gone = Sandbox({"id": "sb_aaaaaaaaaaaaaaaaaaaa", "language_pack": "python"}, sb._conn)
        for call in (lambda: gone.expose_port(8000), gone.list_ports, lambda: gone.close_port(8000)):
            with self.assertRaises(EmberdError) as cm:
                call()
            self.assertEqual((cm.exception.code, cm.exception.status), ("SANDBOX_NOT_FOUND", 404))


if __name__ == "__main__":
    unittest.main()
