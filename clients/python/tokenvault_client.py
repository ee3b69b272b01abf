"""TokenVault client for Python services: one file, standard library only.

    from tokenvault_client import TokenVaultClient
    vault = TokenVaultClient()                      # $TOKENVAULT_SOCKET, else ./.tokenvault/tokenvault.sock
    token = vault.token("acme/ads")                 # just the token string
    reply = vault.get("acme/ads", proof="timed")    # dict: token, kind, expires_at, scopes, appsecret_proof, ...
    for change in vault.watch(["acme/*"]):          # {"name": "acme/ads", "change": "replaced"}, as committed
        token = vault.token(change["name"])

From a shell: `python -m tokenvault_client get acme/ads [--proof timed]`, `... list`, `... watch 'acme/*'`.
Install with `pip install ./clients/python`.

With Meta's `facebook-business` SDK, the app secret never needs to leave the vault: see tokenvault_facebook
(`api = facebook_ads_api("acme/ads")` puts the vault's token and proof on every request).

Speaks protocol v1 (../../Docs/PROTOCOL.md): one JSON object per line over a Unix socket. The connection
is kept open and reused; a broken one is reopened once per call. Thread-safe.

Before sending anything on a new connection, the client asks the kernel (SO_PEERCRED) which uid serves the
socket and raises ImpostorError unless it is `expected_uid` (or $TOKENVAULT_SERVER_UID) when one is given,
or else root, or the owner of both the socket directory and the socket file on a path that nobody else can
rearrange (see `_check_server`). Linux only.
"""

import json
import os
import socket
import stat
import struct
import threading

__all__ = [
    "TokenVaultClient", "TokenVaultError", "BadRequestError", "UnknownOpError", "TooLargeError", "DeniedError",
    "NotFoundError", "UnavailableError", "RateLimitedError", "InternalError", "ConnectError", "ProtocolError",
    "ImpostorError", "Watch",
]


class TokenVaultError(Exception):
    """An error reply from the daemon (or a failure to get one). `code` is the contract's code."""

    code = "error"

    def __init__(self, message, code=None):
        super().__init__(message)
        if code:
            self.code = code
        self.message = message


class BadRequestError(TokenVaultError): code = "bad_request"
class UnknownOpError(TokenVaultError): code = "unknown_op"
class TooLargeError(TokenVaultError): code = "too_large"
class DeniedError(TokenVaultError): code = "denied"
class NotFoundError(TokenVaultError): code = "not_found"
class UnavailableError(TokenVaultError): code = "unavailable"
class RateLimitedError(TokenVaultError): code = "rate_limited"
class InternalError(TokenVaultError): code = "internal"
class ConnectError(TokenVaultError): code = "connect"
class ProtocolError(TokenVaultError): code = "protocol_error"
class ImpostorError(TokenVaultError): code = "impostor"

_ERRORS = {cls.code: cls for cls in (BadRequestError, UnknownOpError, TooLargeError, DeniedError, NotFoundError,
                                     UnavailableError, RateLimitedError, InternalError)}


def default_socket_path():
    if os.environ.get("TOKENVAULT_SOCKET"):
        return os.environ["TOKENVAULT_SOCKET"]
    return os.path.join(os.environ.get("TOKENVAULT_HOME") or "./.tokenvault", "tokenvault.sock")


def _uid(value, what):
    if isinstance(value, str):
        try:
            value = int(value.strip(), 10)
        except ValueError:
            raise ValueError("%s must be a uid (a number), not %r" % (what, value)) from None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError("%s must be a uid (a number >= 0), not %r" % (what, value))
    return value


class TokenVaultClient:
    def __init__(self, socket_path=None, timeout=10.0, expected_uid=None):
        """`expected_uid`: the uid the daemon must run as (default $TOKENVAULT_SERVER_UID, else see
        `_check_server`)."""
        self.socket_path = socket_path or default_socket_path()
        self.timeout = timeout
        if expected_uid is not None:
            self.expected_uid = _uid(expected_uid, "expected_uid")
        elif os.environ.get("TOKENVAULT_SERVER_UID"):
            self.expected_uid = _uid(os.environ["TOKENVAULT_SERVER_UID"], "TOKENVAULT_SERVER_UID")
        else:
            self.expected_uid = None
        self._lock = threading.Lock()
        self._sock = None
        self._file = None
        self._next_id = 0

    # -- the operations of the contract --------------------------------------------------------

    def ping(self):
        return self._call({"op": "ping"})["protocol"]

    def whoami(self):
        r = self._call({"op": "whoami"})
        return {"uid": r["uid"], "gid": r["gid"], "pid": r["pid"]}

    def list(self):
        return self._call({"op": "list"})["names"]

    def get(self, name, proof=None):
        """The whole `get` reply as a dict. `proof` is None, "timed" or "legacy"."""
        request = {"op": "get", "name": name}
        if proof is not None:
            if proof not in ("timed", "legacy"):
                raise ValueError('proof must be "timed" or "legacy"')
            request["proof"] = proof
        reply = self._call(request)
        if not isinstance(reply.get("token"), str):
            raise ProtocolError("a get reply without a token")
        return reply

    def token(self, name):
        """Just the token string."""
        return self.get(name)["token"]

    def close(self):
        with self._lock:
            self._disconnect()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def watch(self, patterns):
        """Subscribes to committed changes to the names matching `patterns` (exact names or `prefix*`) that this
        caller may read, and returns an iterator of dicts {"name": ..., "change": "replaced" | "removed" |
        "refreshed"}. No token is sent: read it again with get(). The subscription is in place when watch()
        returns; it raises DeniedError for a pattern the policy does not cover. It uses a connection of its own,
        with no timeout, and ends when the daemon closes it (a stop, or a watcher too far behind) or when
        close() is called (from any thread): reconnect and get() again, since changes made meanwhile are not
        replayed."""
        return Watch(self, patterns)

    # -- transport -----------------------------------------------------------------------------

    def _connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        try:
            s.connect(self.socket_path)
        except OSError as e:
            s.close()
            raise ConnectError("cannot connect to the TokenVault daemon at %s: %s (is `tokenvault serve` running?)"
                               % (self.socket_path, e.strerror or e)) from None
        try:
            self._check_server(s)
        except BaseException:
            s.close()
            raise
        self._sock = s
        self._file = s.makefile("rwb")

    def _check_server(self, s):
        """Refuses a server that may be an impostor, before any request is sent on `s`.

        With an expected uid, the server must run as it. Without one, it must be root, or else:

        1. every symlink among the components of the socket path's absolute form (not resolved), from "/"
           down to the socket's directory, is owned by root or the server's uid;
        2. the socket's directory, resolved, and the socket file are owned by the server's uid;
        3. every ancestor of that resolved directory up to "/" is owned by root or the server's uid, and if a
           group or others can write it, it has the sticky bit.

        The daemon refuses to serve from a directory that another user or a group can write, so a genuine
        daemon is root or owns its socket directory; whoever else answers there got in through a directory
        that is not theirs. Rules 1 and 3 close the way round: whoever can write a directory higher up (or
        owns a symlink on the way) could swap the daemon's directory for one of their own.
        """
        path = self.socket_path
        try:
            creds = s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            _pid, uid, _gid = struct.unpack("iII", creds)
        except (OSError, AttributeError) as e:
            raise ImpostorError("cannot learn which uid serves %s (SO_PEERCRED: %s): refusing to trust it"
                                % (path, e)) from None
        if self.expected_uid is not None:
            if uid != self.expected_uid:
                raise ImpostorError("the process answering on %s runs as uid %d, but uid %d was expected: "
                                    "refusing to trust it" % (path, uid, self.expected_uid))
            return
        if uid == 0:
            return
        directory = os.path.dirname(path) or "."
        hint = "; pass expected_uid= (or set TOKENVAULT_SERVER_UID) if this daemon is genuine"
        trusted = (0, uid)
        try:
            # 1. Symlinks on the path as given (absolute, unresolved), from "/" down to the socket's directory.
            absolute_dir = os.path.dirname(os.path.abspath(path))
            component = "/"
            for part in [p for p in absolute_dir.split("/") if p]:
                component = os.path.join(component, part)
                st = os.lstat(component)
                if stat.S_ISLNK(st.st_mode) and st.st_uid not in trusted:
                    raise ImpostorError("the process answering on %s runs as uid %d, but the symlink %s on the "
                                        "path to the socket is owned by uid %d (neither root nor the server): "
                                        "whoever owns it chose where it leads; refusing to trust it%s"
                                        % (path, uid, component, st.st_uid, hint))
            # 2. The socket's directory, resolved, and the socket file.
            real_dir = os.path.realpath(directory)
            dir_uid = os.stat(real_dir).st_uid
            sock_uid = os.lstat(path).st_uid
            shown = directory if os.path.abspath(directory) == real_dir else "%s (%s)" % (directory, real_dir)
            if dir_uid != uid:
                raise ImpostorError("the process answering on %s runs as uid %d, but the socket directory %s is "
                                    "owned by uid %d: refusing to trust it%s" % (path, uid, shown, dir_uid, hint))
            if sock_uid != uid:
                raise ImpostorError("the process answering on %s runs as uid %d, but the socket file is owned by "
                                    "uid %d: refusing to trust it%s" % (path, uid, sock_uid, hint))
            # 3. Every ancestor of the resolved directory, up to "/".
            ancestor = real_dir
            while ancestor != "/":
                ancestor = os.path.dirname(ancestor)
                st = os.lstat(ancestor)
                mode = stat.S_IMODE(st.st_mode)
                if st.st_uid not in trusted:
                    raise ImpostorError("directory %s (mode %04o, uid %d) on the path to the socket is owned by "
                                        "neither root nor the server's uid %d: its owner could replace the "
                                        "daemon's directory; refusing to trust the server (set "
                                        "TOKENVAULT_SERVER_UID / expected_uid= if the daemon is genuine)"
                                        % (ancestor, mode, st.st_uid, uid))
                if mode & 0o022 and not mode & 0o1000:
                    raise ImpostorError("directory %s (mode %04o, uid %d) on the path to the socket can be written "
                                        "by others without the sticky bit: whoever can write it could replace "
                                        "the daemon's directory; refusing to trust the server (set "
                                        "TOKENVAULT_SERVER_UID / expected_uid= if the daemon is genuine)"
                                        % (ancestor, mode, st.st_uid))
        except OSError as e:
            raise ImpostorError("the process answering on %s runs as uid %d, but the owners of the socket and "
                                "of the directories on its path cannot be checked (%s): refusing to trust it%s"
                                % (path, uid, e.strerror or e, hint)) from None

    def _disconnect(self):
        for thing in (self._file, self._sock):
            try:
                if thing is not None:
                    thing.close()
            except OSError:
                pass
        self._sock = self._file = None

    def _exchange(self, line):
        if self._sock is None:
            self._connect()
        self._file.write(line)
        self._file.flush()
        reply = self._file.readline()
        if not reply.endswith(b"\n"):
            raise ConnectionResetError("the daemon closed the connection")
        return reply

    def _call(self, request):
        with self._lock:
            self._next_id += 1
            request = dict(request, id=self._next_id)
            line = (json.dumps(request, separators=(",", ":")) + "\n").encode()
            try:
                reply = self._exchange(line)
            except (OSError, ConnectionResetError):
                # An idle connection the daemon closed: reconnect once.
                self._disconnect()
                try:
                    reply = self._exchange(line)
                except socket.timeout:
                    self._disconnect()
                    raise ConnectError("no reply from the daemon within %s s" % self.timeout) from None
                except (OSError, ConnectionResetError) as e:
                    self._disconnect()
                    raise ConnectError("lost the connection to the daemon: %s" % e) from None
        try:
            obj = json.loads(reply)
        except ValueError:
            raise ProtocolError("the reply is not JSON") from None
        if not isinstance(obj, dict):
            raise ProtocolError("the reply is not a JSON object")
        if obj.get("id") != request["id"]:
            with self._lock:
                self._disconnect()
            raise ProtocolError("the reply's id does not match the request")
        if obj.get("ok") is True:
            return obj
        err = obj.get("error") or {}
        code, message = err.get("code", "internal"), err.get("message", "no message")
        if code == "too_large":
            with self._lock:
                self._disconnect()
        raise _ERRORS.get(code, TokenVaultError)(message, code)


class Watch:
    """An open `watch` subscription (see TokenVaultClient.watch): iterate it for changes; close() ends it."""

    def __init__(self, client, patterns):
        self._conn = TokenVaultClient(client.socket_path, client.timeout, client.expected_uid)
        self._conn._connect()
        try:
            line = (json.dumps({"op": "watch", "names": list(patterns), "id": 1}, separators=(",", ":")) + "\n").encode()
            obj = json.loads(self._conn._exchange(line))
            if obj.get("ok") is not True:
                err = obj.get("error") or {}
                raise _ERRORS.get(err.get("code"), TokenVaultError)(err.get("message", "no message"), err.get("code"))
            self._conn._sock.settimeout(None)
        except BaseException:
            self._conn._disconnect()
            raise
        self._closed = False

    def __iter__(self):
        return self

    def __next__(self):
        while not self._closed:
            try:
                line = self._conn._file.readline()
            except (OSError, ValueError, AttributeError):
                line = b""
            if not line.endswith(b"\n"):
                self.close()
                self._conn._disconnect()
                break
            event = json.loads(line)
            if event.get("event") == "changed" and isinstance(event.get("name"), str):
                return {"name": event["name"], "change": event.get("change", "replaced")}
        raise StopIteration

    def close(self):
        """Ends the subscription; an iteration blocked in another thread then stops."""
        self._closed = True
        sock = self._conn._sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        self._conn._disconnect()

    def __del__(self):
        try:
            self._conn._disconnect()
        except Exception:
            pass


def main(argv=None):
    """`python -m tokenvault_client get NAME [--proof timed|legacy] | list | watch PATTERN...`"""
    import argparse
    import sys
    parser = argparse.ArgumentParser(prog="python -m tokenvault_client", description="Read tokens from the TokenVault daemon.")
    parser.add_argument("--socket", help="the daemon's socket (default $TOKENVAULT_SOCKET)")
    sub = parser.add_subparsers(dest="command", required=True)
    get = sub.add_parser("get", help="print a token (or, with --proof, a JSON object with its proof)")
    get.add_argument("name")
    get.add_argument("--proof", choices=["timed", "legacy"])
    sub.add_parser("list", help="the names this caller may read, one a line")
    watch = sub.add_parser("watch", help="print one JSON line per change, until the daemon closes the connection")
    watch.add_argument("patterns", nargs="+")
    args = parser.parse_args(argv)
    client = TokenVaultClient(args.socket)
    try:
        if args.command == "get":
            reply = client.get(args.name, proof=args.proof)
            if args.proof:
                print(json.dumps({k: reply[k] for k in ("token", "appsecret_proof", "appsecret_time") if k in reply}))
            else:
                sys.stdout.write(reply["token"] + ("\n" if sys.stdout.isatty() else ""))
        elif args.command == "list":
            for name in client.list():
                print(name)
        else:
            for change in client.watch(args.patterns):
                print(json.dumps(change), flush=True)
    except TokenVaultError as e:
        print("error: %s: %s" % (e.code, e), file=sys.stderr)
        return 8 if e.code == "denied" else 3 if e.code == "not_found" else 7
    except KeyboardInterrupt:
        return 130
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
