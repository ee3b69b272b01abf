"""Tests of tokenvault_client.py.

Against a fake server (always), and against the real daemon when TOKENVAULT_BIN names the built
`tokenvault` binary (the Swift test suite sets it and runs this file). The impostor tests bind a forged
server for real; those that run it as another user (nobody, uid 65534, via setpriv) need root.
"""

import hashlib
import hmac
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from unittest import mock

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


FORGED = {"ok": True, "name": "x", "token": "ATTACKER", "kind": "user", "expires_at": None, "scopes": [],
          "valid": True, "checked_at": 1}
NOBODY = 65534

# The impostor as a standalone script, so it can run as another user: answers every line with FORGED
# (echoing the id), prints "ready" once it listens and "got LINE" for each request, and exits by itself.
IMPOSTOR_SCRIPT = r"""
import json, socket, sys, time
path, forged = sys.argv[1], json.loads(sys.argv[2])
srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
srv.bind(path)
srv.listen(4)
srv.settimeout(0.2)
print("ready", flush=True)
deadline = time.monotonic() + 20
while time.monotonic() < deadline:
    try:
        conn, _ = srv.accept()
    except socket.timeout:
        continue
    conn.settimeout(2)
    try:
        for line in conn.makefile("rb"):
            print("got", line.decode().strip(), flush=True)
            conn.sendall((json.dumps(dict(forged, id=json.loads(line).get("id"))) + "\n").encode())
    except (OSError, ValueError):
        pass
    conn.close()
"""


class ImpostorThread(threading.Thread):
    """A forged server in this process: answers every line with FORGED; records the lines in `seen`."""

    def __init__(self, path):
        super().__init__(daemon=True)
        self.seen, self.stopping = [], threading.Event()
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(path)
        self.server.listen(4)
        self.server.settimeout(0.2)

    def run(self):
        while not self.stopping.is_set():
            try:
                conn, _ = self.server.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            conn.settimeout(2)
            try:
                for line in conn.makefile("rb"):
                    self.seen.append(line)
                    conn.sendall((json.dumps(dict(FORGED, id=json.loads(line).get("id"))) + "\n").encode())
            except (OSError, ValueError):
                pass
            conn.close()

    def stop(self):
        self.stopping.set()
        self.join(5)
        self.server.close()


class ImpostorTests(unittest.TestCase):
    """Someone else's server on the socket path: the client must refuse it before it sends anything."""

    def setUp(self):
        self.dir = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.path = os.path.join(self.dir, "tv.sock")

    def impostor_thread(self, path):
        t = ImpostorThread(path)
        t.start()
        self.addCleanup(t.stop)
        return t

    _python_for_nobody = None

    def python_as_nobody(self):
        """The command line prefix that runs python3 as uid/gid 65534 (skips the test when there is none)."""
        setpriv = shutil.which("setpriv")
        if not setpriv:
            self.skipTest("setpriv (util-linux) is needed to run the impostor as another user")
        prefix = [setpriv, "--reuid", str(NOBODY), "--regid", str(NOBODY), "--clear-groups"]
        if ImpostorTests._python_for_nobody is None:
            for candidate in (sys.executable, "/usr/bin/python3"):
                try:
                    if subprocess.run(prefix + [candidate, "-c", "pass"], capture_output=True, timeout=10).returncode == 0:
                        ImpostorTests._python_for_nobody = candidate
                        break
                except (OSError, subprocess.TimeoutExpired):
                    pass
            else:
                self.skipTest("no python3 that uid %d can run" % NOBODY)
        return prefix + [ImpostorTests._python_for_nobody]

    def run_as_nobody(self, code, *args):
        """Runs the Python `code` as uid 65534 (bounded in time); returns the CompletedProcess."""
        return subprocess.run(self.python_as_nobody() + ["-c", code, *args], capture_output=True, timeout=10,
                              stdin=subprocess.DEVNULL)

    def impostor_as_nobody(self, path):
        """Starts IMPOSTOR_SCRIPT as uid/gid 65534; returns the list its output lines arrive in."""
        proc = subprocess.Popen(self.python_as_nobody() + ["-c", IMPOSTOR_SCRIPT, path, json.dumps(FORGED)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        lines = []
        reader = threading.Thread(target=lambda: lines.extend(l.decode().strip() for l in proc.stdout), daemon=True)
        reader.start()

        def stop():
            if proc.poll() is None:
                proc.kill()
            proc.wait(5)
            reader.join(5)
            proc.stdout.close()
            proc.stderr.close()
        self.addCleanup(stop)
        deadline = time.monotonic() + 10
        while "ready" not in lines:
            if proc.poll() is not None or time.monotonic() > deadline:
                stop()
                self.fail("the impostor did not start: %s" % proc.stderr.read().decode(errors="replace"))
            time.sleep(0.02)
        return lines

    def assertRefused(self, client, *fragments):
        with self.assertRaises(tv.ImpostorError) as cm:
            client.token("x")
        e = cm.exception
        self.assertEqual(e.code, "impostor")
        self.assertNotIn("ATTACKER", str(e))
        for fragment in fragments:
            self.assertIn(fragment, str(e))
        client.close()
        return e

    def test_expected_uid_refuses_a_server_of_another_uid(self):
        imp = self.impostor_thread(self.path)
        me = os.getuid()
        c = tv.TokenVaultClient(self.path, timeout=2, expected_uid=me + 1)
        self.assertRefused(c, self.path, "uid %d" % me, "uid %d was expected" % (me + 1))
        self.assertRefused(c, self.path)  # and again on the next call: nothing is cached
        self.assertEqual(imp.seen, [], "a request was sent to the impostor")
        # The same server passes when its uid is the expected one: it is the check that refused.
        with tv.TokenVaultClient(self.path, timeout=2, expected_uid=me) as c:
            self.assertEqual(c.token("x"), "ATTACKER")

    def test_TOKENVAULT_SERVER_UID_sets_the_expected_uid_and_the_parameter_wins(self):
        self.impostor_thread(self.path)
        me = os.getuid()
        with mock.patch.dict(os.environ, {"TOKENVAULT_SERVER_UID": str(me + 1)}):
            self.assertRefused(tv.TokenVaultClient(self.path, timeout=2), "uid %d was expected" % (me + 1))
            with tv.TokenVaultClient(self.path, timeout=2, expected_uid=me) as c:
                self.assertEqual(c.token("x"), "ATTACKER")
        with mock.patch.dict(os.environ, {"TOKENVAULT_SERVER_UID": str(me)}):
            self.assertRefused(tv.TokenVaultClient(self.path, timeout=2, expected_uid=me + 1))

    def test_a_bad_expected_uid_is_refused_locally(self):
        for bad in (-1, "root", True, 1.5):
            with self.assertRaises(ValueError):
                tv.TokenVaultClient(self.path, expected_uid=bad)
        with mock.patch.dict(os.environ, {"TOKENVAULT_SERVER_UID": "nobody"}), self.assertRaises(ValueError) as cm:
            tv.TokenVaultClient(self.path)
        self.assertIn("TOKENVAULT_SERVER_UID", str(cm.exception))

    def test_default_rule_trusts_a_server_owning_its_directory_and_socket(self):
        imp = self.impostor_thread(self.path)  # this process, in its own temp directory
        with tv.TokenVaultClient(self.path, timeout=2) as c:
            self.assertEqual(c.token("x"), "ATTACKER")
        self.assertEqual(len(imp.seen), 1)

    @unittest.skipIf(os.getuid() == 0 or os.stat(tempfile.gettempdir()).st_uid == os.getuid(),
                     "needs a non-root user and a shared temp directory it does not own (the root tests cover this)")
    def test_default_rule_refuses_a_server_in_a_directory_it_does_not_own(self):
        shared = tempfile.gettempdir()
        path = os.path.join(shared, "tv-impostor-%d-%d.sock" % (os.getpid(), time.monotonic_ns()))
        self.addCleanup(lambda: os.path.exists(path) and os.unlink(path))
        imp = self.impostor_thread(path)
        self.assertRefused(tv.TokenVaultClient(path, timeout=2), path, "uid %d" % os.getuid(),
                           "socket directory %s is owned by uid %d" % (shared, os.stat(shared).st_uid), "expected_uid=")
        self.assertEqual(imp.seen, [])

    @unittest.skipUnless(os.getuid() == 0, "needs root: runs the impostor as another user (uid 65534)")
    def test_default_rule_refuses_another_user_in_a_writable_root_directory(self):
        os.chmod(self.dir, 0o755)
        shared = os.path.join(self.dir, "shared")
        os.mkdir(shared)
        os.chmod(shared, 0o777)  # root's, but anyone can write it
        path = os.path.join(shared, "tv.sock")
        lines = self.impostor_as_nobody(path)
        e = self.assertRefused(tv.TokenVaultClient(path, timeout=2), path, "uid %d" % NOBODY,
                               "socket directory %s is owned by uid 0" % shared, "expected_uid=", "TOKENVAULT_SERVER_UID")
        self.assertIsInstance(e, tv.TokenVaultError)
        self.assertEqual([l for l in lines if l.startswith("got")], [], "a request was sent to the impostor")
        # Told to expect uid 65534, the client talks to it: it is the check that refused.
        with tv.TokenVaultClient(path, timeout=2, expected_uid=NOBODY) as c:
            self.assertEqual(c.token("x"), "ATTACKER")

    @unittest.skipUnless(os.getuid() == 0, "needs root: runs the server as another user (uid 65534)")
    def test_default_rule_checks_the_owner_of_the_socket_file(self):
        own = os.path.join(self.dir, "own")
        os.chmod(self.dir, 0o755)
        os.mkdir(own, 0o755)
        os.chown(own, NOBODY, NOBODY)  # nobody's own directory: nobody serving there is trusted
        path = os.path.join(own, "tv.sock")
        self.impostor_as_nobody(path)
        with tv.TokenVaultClient(path, timeout=2) as c:
            self.assertEqual(c.token("x"), "ATTACKER")
        os.lchown(path, NOBODY - 1, NOBODY - 1)
        self.assertRefused(tv.TokenVaultClient(path, timeout=2), "socket file is owned by uid %d" % (NOBODY - 1))

    @unittest.skipUnless(os.getuid() == 0, "needs root: runs the impostor as another user (uid 65534)")
    def test_default_rule_refuses_a_swapped_directory_under_a_writable_ancestor_without_sticky_bit(self):
        os.chmod(self.dir, 0o755)
        shared = os.path.join(self.dir, "shared")
        os.mkdir(shared)
        os.chmod(shared, 0o777)  # root's, anyone can write it, no sticky bit
        legit = os.path.join(shared, "tv")
        os.mkdir(legit, 0o755)  # the daemon's directory (root's here)
        # The attack, for real, as uid 65534: move the daemon's directory away, put one of its own in its place
        # (owned by it, so "the server owns the directory and the socket" holds), and serve there.
        swap = self.run_as_nobody("import os, sys; os.rename(sys.argv[1], sys.argv[1] + '.old'); "
                                  "os.mkdir(sys.argv[1], 0o755)", legit)
        self.assertEqual(swap.returncode, 0, swap.stderr.decode(errors="replace"))
        self.assertEqual(os.stat(legit).st_uid, NOBODY)
        path = os.path.join(legit, "tokenvault.sock")
        lines = self.impostor_as_nobody(path)
        self.assertEqual(os.lstat(path).st_uid, NOBODY)
        self.assertRefused(tv.TokenVaultClient(path, timeout=2), "directory %s (mode 0777, uid 0)" % shared,
                           "without the sticky bit", "TOKENVAULT_SERVER_UID", "expected_uid=")
        self.assertEqual([l for l in lines if l.startswith("got")], [], "a request was sent to the impostor")
        # With the sticky bit, nobody could not have moved root's directory away...
        os.chmod(shared, 0o1777)
        other = os.path.join(shared, "other")
        os.mkdir(other, 0o755)
        moved = self.run_as_nobody("import os, sys\ntry:\n    os.rename(sys.argv[1], sys.argv[1] + '.old')\n"
                                   "except PermissionError:\n    sys.exit(3)", other)
        self.assertEqual(moved.returncode, 3, "the sticky bit did not stop the rename: %r" % (moved,))
        # ...so a server owning its directory under it is trusted, as under /tmp: it is the ancestor rule
        # that refused above.
        with tv.TokenVaultClient(path, timeout=2) as c:
            self.assertEqual(c.token("x"), "ATTACKER")

    @unittest.skipUnless(os.getuid() == 0, "needs root: runs the impostor as another user (uid 65534)")
    def test_default_rule_refuses_a_symlink_on_the_path_owned_by_another_uid(self):
        os.chmod(self.dir, 0o755)
        d = os.path.join(self.dir, "d")
        os.mkdir(d, 0o755)
        os.chown(d, NOBODY, NOBODY)
        self.impostor_as_nobody(os.path.join(d, "tokenvault.sock"))
        link = os.path.join(self.dir, "L")
        os.symlink(d, link)
        os.lchown(link, NOBODY - 1, NOBODY - 1)
        via_link = os.path.join(link, "tokenvault.sock")
        self.assertRefused(tv.TokenVaultClient(via_link, timeout=2), "symlink %s" % link,
                           "owned by uid %d" % (NOBODY - 1), "expected_uid=")
        # The same path through a relative socket path (resolved against the working directory).
        old_cwd = os.getcwd()
        os.chdir(self.dir)
        self.addCleanup(os.chdir, old_cwd)
        self.assertRefused(tv.TokenVaultClient("L/tokenvault.sock", timeout=2), "symlink %s" % link)
        os.chdir(old_cwd)
        # A symlink owned by the server's uid, or by root, is fine: it is the symlink's owner that refused.
        for owner in (NOBODY, 0):
            os.lchown(link, owner, owner)
            with tv.TokenVaultClient(via_link, timeout=2) as c:
                self.assertEqual(c.token("x"), "ATTACKER")

    @unittest.skipUnless(os.getuid() == 0, "needs root: checks that a root server is trusted by default")
    def test_default_rule_trusts_root(self):
        self.assertEqual(os.stat(self.dir).st_uid, 0)
        self.impostor_thread(self.path)  # this process, root, in a root-owned directory
        with tv.TokenVaultClient(self.path, timeout=2) as c:
            self.assertEqual(c.token("x"), "ATTACKER")


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

    def test_watch_tells_of_a_put_made_by_another_process(self):
        c = tv.TokenVaultClient(self.sock, timeout=5)
        with self.assertRaises(tv.DeniedError):
            next(c.watch(["other/*"]))
        changes = c.watch(["acme/*"])
        seen = []
        reader = threading.Thread(target=lambda: seen.append(next(changes)))
        reader.start()
        time.sleep(0.3)  # the watch is acknowledged before the first event is read
        subprocess.run([self.bin, "put", "acme/ads", "--kind", "system_user", "--app", "acme", "--force"],
                       input=b"EAAB-python-2\n", env=self.env, check=True, capture_output=True)
        reader.join(10)
        self.assertEqual(seen, [{"name": "acme/ads", "change": "replaced"}])
        self.assertEqual(c.token("acme/ads"), "EAAB-python-2")
        subprocess.run([self.bin, "put", "acme/ads", "--kind", "system_user", "--app", "acme", "--force"],
                       input=b"EAAB-python\n", env=self.env, check=True, capture_output=True)
        c.close()

    def test_the_module_runs_from_the_shell(self):
        here = os.path.dirname(os.path.abspath(__file__))
        env = dict(self.env, TOKENVAULT_SOCKET=self.sock, PYTHONPATH=here)
        r = subprocess.run([sys.executable, "-m", "tokenvault_client", "get", "acme/ads"], env=env, capture_output=True, timeout=10)
        self.assertEqual((r.returncode, r.stdout), (0, b"EAAB-python"))
        r = subprocess.run([sys.executable, "-m", "tokenvault_client", "get", "other/x"], env=env, capture_output=True, timeout=10)
        self.assertEqual(r.returncode, 8)
        self.assertIn(b"denied", r.stderr)

    def test_the_real_daemon_passes_the_server_check(self):
        with tv.TokenVaultClient(self.sock, timeout=5) as c:  # the default rule: it owns its directory, or is root
            self.assertEqual(c.ping(), 1)
        with tv.TokenVaultClient(self.sock, timeout=5, expected_uid=os.getuid()) as c:
            self.assertEqual(c.ping(), 1)
        with tv.TokenVaultClient(self.sock, timeout=5, expected_uid=os.getuid() + 1) as c:
            with self.assertRaises(tv.ImpostorError):
                c.ping()


if __name__ == "__main__":
    unittest.main()
