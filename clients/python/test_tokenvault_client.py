"""Tests of tokenvault_client.py.

Against a fake server (always), and against the real daemon when TOKENVAULT_BIN names the built
`tokenvault` binary (the Swift test suite sets it and runs this file).
"""

import hashlib
import hmac
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest

import tokenvault_client as tv


class FakeDaemon(threading.Thread):
    """Answers with canned replies, echoing ids; records what it was sent."""

    def __init__(self, path, replies):
        super().__init__(daemon=True)
        self.path, self.replies, self.seen = path, replies, []
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(path)
        self.server.listen(4)

    def run(self):
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            f = conn.makefile("rwb")
            for line in f:
                req = json.loads(line)
                self.seen.append(req)
                reply = dict(self.replies.get(req["op"], {"ok": False, "error": {"code": "unknown_op", "message": "?"}}))
                reply["id"] = req["id"]
                f.write((json.dumps(reply) + "\n").encode())
                f.flush()
                if reply.get("close"):
                    break
            conn.close()


class FakeServerTests(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp()
        self.path = os.path.join(self.dir, "tv.sock")

    def tearDown(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def start(self, replies):
        d = FakeDaemon(self.path, replies)
        d.start()
        return d

    def test_get_returns_the_reply_and_reuses_the_connection(self):
        d = self.start({"get": {"ok": True, "name": "a", "token": "EAAB", "kind": "user", "expires_at": None,
                                "scopes": ["ads_read"], "valid": True, "checked_at": 1}})
        c = tv.TokenVaultClient(self.path)
        self.assertEqual(c.token("a"), "EAAB")
        self.assertEqual(c.get("a", proof="timed")["scopes"], ["ads_read"])
        self.assertEqual(d.seen[1], {"op": "get", "name": "a", "proof": "timed", "id": 2})
        c.close()

    def test_every_error_code_is_a_typed_exception(self):
        for code, cls in tv._ERRORS.items():
            self.tearDown()
            self.setUp()
            self.start({"get": {"ok": False, "error": {"code": code, "message": "msg " + code}}})
            with self.assertRaises(cls) as cm, tv.TokenVaultClient(self.path) as c:
                c.get("x")
            self.assertEqual(cm.exception.code, code)
            self.assertIn(code, str(cm.exception))

    def test_no_daemon_is_a_connect_error(self):
        with self.assertRaises(tv.ConnectError):
            tv.TokenVaultClient(self.path, timeout=1).ping()

    def test_bad_proof_kind_is_refused_locally(self):
        with self.assertRaises(ValueError):
            tv.TokenVaultClient(self.path).get("x", proof="sometimes")

    def test_default_socket_path_follows_the_environment(self):
        old = dict(os.environ)
        try:
            os.environ.pop("TOKENVAULT_SOCKET", None)
            os.environ["TOKENVAULT_HOME"] = "/var/lib/tv"
            self.assertEqual(tv.default_socket_path(), "/var/lib/tv/tokenvault.sock")
            os.environ["TOKENVAULT_SOCKET"] = "/run/tv.sock"
            self.assertEqual(tv.default_socket_path(), "/run/tv.sock")
        finally:
            os.environ.clear()
            os.environ.update(old)


@unittest.skipUnless(os.environ.get("TOKENVAULT_BIN"), "set TOKENVAULT_BIN to run against the real daemon")
class RealDaemonTests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.bin = os.environ["TOKENVAULT_BIN"]
        cls.home = tempfile.mkdtemp()
        cls.env = dict(os.environ, TOKENVAULT_HOME=cls.home + "/v", TOKENVAULT_GRAPH_URL="http://127.0.0.1:9")
        run = lambda *a, stdin=None: subprocess.run([cls.bin, *a], input=stdin, env=cls.env, check=True, capture_output=True)
        run("init")
        run("app", "add", "acme", "--app-id", "1234", stdin=b"py-app-secret\n")
        run("put", "acme/ads", "--kind", "system_user", "--app", "acme", stdin=b"EAAB-python\n")
        with open(cls.home + "/v/policy.toml", "w") as f:
            f.write('[[allow]]\nuid = %d\ntokens = ["acme/*"]\nproof = true\n' % os.getuid())
        cls.sock = cls.home + "/v/tokenvault.sock"
        cls.daemon = subprocess.Popen([cls.bin, "serve"], env=cls.env, stderr=subprocess.DEVNULL)
        for _ in range(200):
            if os.path.exists(cls.sock):
                break
            time.sleep(0.05)

    @classmethod
    def tearDownClass(cls):
        cls.daemon.send_signal(signal.SIGTERM)
        cls.daemon.wait(10)
        shutil.rmtree(cls.home, ignore_errors=True)

    def test_reads_token_and_proofs(self):
        with tv.TokenVaultClient(self.sock) as c:
            self.assertEqual(c.ping(), 1)
            self.assertEqual(c.whoami()["uid"], os.getuid())
            self.assertEqual(c.list(), ["acme/ads"])
            self.assertEqual(c.token("acme/ads"), "EAAB-python")
            r = c.get("acme/ads", proof="timed")
            msg = ("EAAB-python|%d" % r["appsecret_time"]).encode()
            self.assertEqual(r["appsecret_proof"], hmac.new(b"py-app-secret", msg, hashlib.sha256).hexdigest())
            legacy = c.get("acme/ads", proof="legacy")["appsecret_proof"]
            self.assertEqual(legacy, hmac.new(b"py-app-secret", b"EAAB-python", hashlib.sha256).hexdigest())
            with self.assertRaises(tv.NotFoundError):
                c.get("acme/none")
            with self.assertRaises(tv.DeniedError):
                c.get("other/x")


if __name__ == "__main__":
    unittest.main()
