"""Tests of tokenvault_facebook.py: Meta's SDK against a local stand-in for the Graph API, with the token and
proof from the real daemon (TOKENVAULT_BIN names the built `tokenvault`; the Swift suite sets it).
Skipped where `facebook-business` is not installed (.ci/run installs it)."""

import hashlib
import hmac
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import unittest
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

try:
    import facebook_business  # noqa: F401
    HAVE_SDK = True
except ImportError:
    HAVE_SDK = False

SECRET = b"fb-app-secret"


class GraphStandIn(ThreadingHTTPServer):
    """Answers /vNN.N/act_101 like the Graph API, and refuses any request whose appsecret_proof is not right
    for its access_token (timed or legacy), as Meta does with "Require App Secret" on."""

    def __init__(self):
        self.requests = []  # (method, path, query dict, body dict)
        super().__init__(("127.0.0.1", 0), _Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.server_address[1]


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        self._answer({})

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        self._answer(dict(urllib.parse.parse_qsl(self.rfile.read(length).decode())))

    def _answer(self, body):
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        self.server.requests.append((self.command, url.path, query, body))
        params = dict(query, **body)
        token, proof = params.get("access_token", ""), params.get("appsecret_proof", "")
        msg = token + ("|" + params["appsecret_time"] if "appsecret_time" in params else "")
        if not token or not hmac.compare_digest(proof, hmac.new(SECRET, msg.encode(), hashlib.sha256).hexdigest()):
            return self._json(400, {"error": {"message": "Invalid appsecret_proof provided in the API argument",
                                              "type": "GraphMethodException", "code": 100}})
        if not url.path.rstrip("/").endswith("/act_101"):
            return self._json(400, {"error": {"message": "Unknown path", "type": "OAuthException", "code": 803}})
        return self._json(200, {"id": "act_101", "name": "Acme Ads", "token_seen": token})

    def _json(self, status, obj):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@unittest.skipUnless(HAVE_SDK, "needs `pip install facebook-business`")
@unittest.skipUnless(os.environ.get("TOKENVAULT_BIN"), "set TOKENVAULT_BIN to run against the real daemon")
class FacebookHelperTests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.bin = os.environ["TOKENVAULT_BIN"]
        cls.home = tempfile.mkdtemp()
        cls.env = dict(os.environ, TOKENVAULT_HOME=cls.home + "/v", TOKENVAULT_GRAPH_URL="http://127.0.0.1:9")
        cls.tv("init")
        cls.tv("app", "add", "acme", "--app-id", "1234", stdin=SECRET + b"\n")
        for name, token in (("acme/ads", b"EAAB-one"), ("acme/rot", b"EAAB-rot-1"), ("acme/gone", b"EAAB-gone"),
                            ("plain/x", b"EAAB-plain")):
            cls.tv("put", name, "--kind", "system_user", "--app", "acme", stdin=token + b"\n")
        with open(cls.home + "/v/policy.toml", "w") as f:
            f.write('[[allow]]\nuid = %d\ntokens = ["acme/*"]\nproof = true\n\n'
                    '[[allow]]\nuid = %d\ntokens = ["plain/*"]\n' % (os.getuid(), os.getuid()))
        cls.sock = cls.home + "/v/tokenvault.sock"
        cls.daemon = subprocess.Popen([cls.bin, "serve"], env=cls.env, stderr=subprocess.DEVNULL)
        for _ in range(200):
            if os.path.exists(cls.sock):
                break
            time.sleep(0.05)
        cls.graph = GraphStandIn()

    @classmethod
    def tearDownClass(cls):
        cls.graph.shutdown()
        cls.daemon.send_signal(signal.SIGTERM)
        cls.daemon.wait(10)
        shutil.rmtree(cls.home, ignore_errors=True)

    @classmethod
    def tv(cls, *args, stdin=None):
        return subprocess.run([cls.bin, *args], input=stdin, env=cls.env, check=True, capture_output=True)

    def api(self, name, **kw):
        from tokenvault_client import TokenVaultClient
        from tokenvault_facebook import facebook_ads_api
        api = facebook_ads_api(name, vault=TokenVaultClient(self.sock, timeout=5), graph_url=self.graph.url, **kw)
        self.addCleanup(api.vault_session.close)
        return api

    def account(self, api):
        from facebook_business.adobjects.adaccount import AdAccount
        return AdAccount("act_101", api=api).api_get(fields=["name"])

    def test_a_request_carries_the_vaults_timed_proof_and_no_app_secret_is_held(self):
        api = self.api("acme/ads")
        self.assertEqual(self.account(api)["name"], "Acme Ads")
        method, path, query, _ = self.graph.requests[-1]
        self.assertEqual((method, query["access_token"]), ("GET", "EAAB-one"))
        self.assertLessEqual(abs(int(query["appsecret_time"]) - time.time()), 5)
        self.assertIsNone(api.vault_session.app_secret)

    def test_legacy_proof(self):
        api = self.api("acme/ads", proof="legacy", watch=False)
        self.assertEqual(self.account(api)["name"], "Acme Ads")
        query = self.graph.requests[-1][2]
        self.assertNotIn("appsecret_time", query)
        self.assertEqual(query["appsecret_proof"], hmac.new(SECRET, b"EAAB-one", hashlib.sha256).hexdigest())

    def test_a_post_carries_the_credentials_in_its_body_not_its_url(self):
        api = self.api("acme/ads")
        api.call("POST", ("act_101",), params={"name": "renamed"})
        method, _, query, body = self.graph.requests[-1]
        self.assertEqual(method, "POST")
        self.assertNotIn("access_token", query)
        self.assertEqual((body["access_token"], body["name"]), ("EAAB-one", "renamed"))

    def test_a_replaced_token_is_used_by_the_next_request(self):
        api = self.api("acme/rot")
        self.assertEqual(self.account(api)["token_seen"], "EAAB-rot-1")
        self.wait_until_watching(api)
        self.tv("put", "acme/rot", "--kind", "system_user", "--app", "acme", "--force", stdin=b"EAAB-rot-2\n")
        deadline = time.monotonic() + 5
        while self.account(api)["token_seen"] != "EAAB-rot-2":
            self.assertLess(time.monotonic(), deadline, "the replaced token was not picked up within 5 s")
            time.sleep(0.02)

    def test_a_removed_token_is_never_sent_again(self):
        from tokenvault_client import NotFoundError
        api = self.api("acme/gone")
        self.assertEqual(self.account(api)["token_seen"], "EAAB-gone")
        self.wait_until_watching(api)
        sent = len(self.graph.requests)
        self.tv("rm", "acme/gone")
        deadline = time.monotonic() + 5
        while True:
            try:
                self.account(api)
            except NotFoundError:
                break
            self.assertLess(time.monotonic(), deadline, "requests still went out 5 s after the token was removed")
            time.sleep(0.02)
        later = [r for r in self.graph.requests[sent:] if r[2].get("access_token") == "EAAB-gone"]
        self.assertLessEqual(len(later), 1)  # at most one in flight while the event travelled

    def test_without_a_watch_each_request_reads_the_token_afresh(self):
        api = self.api("acme/ads", watch=False)
        before = self.audited_reads("acme/ads")
        for _ in range(3):
            self.account(api)
        # No change could reach it, so it never reuses a read: three requests, three audited reads.
        self.assertEqual(self.audited_reads("acme/ads") - before, 3)

    def test_a_rule_without_proof_is_refused_at_once(self):
        from tokenvault_client import DeniedError
        with self.assertRaises(DeniedError) as e:
            self.api("plain/x")
        self.assertIn("proofs", str(e.exception))

    def audited_reads(self, name):
        out = self.tv("audit", "query", "--token", name).stdout.decode()
        return sum(1 for line in out.splitlines() if "granted" in line)

    def wait_until_watching(self, api):
        deadline = time.monotonic() + 5
        while not api.vault_session._watching:
            self.assertLess(time.monotonic(), deadline)
            time.sleep(0.01)


if __name__ == "__main__":
    unittest.main()
