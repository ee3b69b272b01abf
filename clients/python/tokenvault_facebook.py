"""Meta's `facebook-business` SDK with its token and appsecret_proof from the TokenVault daemon.

    from tokenvault_facebook import facebook_ads_api
    from facebook_business.adobjects.adaccount import AdAccount
    api = facebook_ads_api("acme/ads")              # a FacebookAdsApi, also made the SDK's default
    AdAccount("act_101").api_get(fields=["name"])   # carries the vault's token and proof

The service holds no app secret: the daemon computes the proof (the caller's policy rule needs
`proof = true`). `VaultSession` is the SDK's `FacebookSession` with every request given the current token
and proof:

- a timed proof (the default; `appsecret_time` + `appsecret_proof`, which Meta accepts for 5 minutes) is
  asked of the daemon again once it is a minute old; `proof="legacy"` sends the SDK's classic proof;
- with `watch=True` (the default) a thread keeps a `watch` on the token: when it is replaced or extended the
  next request uses the new one; when it is removed, requests raise NotFoundError rather than use it;
- while that watch is not connected (the daemon restarting, say), every request reads the token afresh, so
  a token revoked meanwhile is never sent; the thread reconnects with backoff.

Every read is audited by the daemon like any other `get`. `api.vault_session.close()` stops the watch
thread (a daemon thread, so it never holds the process open).
"""

import threading
import time

import requests
from facebook_business.api import FacebookAdsApi
from facebook_business.session import FacebookSession

from tokenvault_client import NotFoundError, TokenVaultClient, TokenVaultError

__all__ = ["VaultSession", "facebook_ads_api"]

TIMED_PROOF_REUSE = 60.0  # seconds a timed proof is reused before the daemon is asked for a new one


class _CredentialedRequests(requests.Session):
    """The SDK's HTTP session, with the vault's credentials merged into each request."""

    def __init__(self, owner):
        super().__init__()
        self._owner = owner

    def request(self, method, url, params=None, data=None, **kwargs):
        in_query = method.upper() in ("GET", "DELETE")
        given = (params if in_query else data) or {}
        if isinstance(given, dict) and "access_token" not in given:
            merged = dict(given, **self._owner.credentials())
            if in_query:
                params = merged
            else:
                data = merged  # in the body, where the SDK puts a POST's parameters: not in a logged URL
        return super().request(method, url, params=params, data=data, **kwargs)


class VaultSession(FacebookSession):
    """A FacebookSession whose access token and appsecret_proof come from the vault, per request."""

    def __init__(self, name, vault=None, proof="timed", watch=True, app_id=None, graph_url=None,
                 proxies=None, timeout=None, debug=False):
        if proof not in ("timed", "legacy"):
            raise ValueError('proof must be "timed" or "legacy"')
        super().__init__(app_id=app_id, app_secret=None, access_token=None, proxies=None, timeout=timeout,
                         debug=debug)
        verify = self.requests.verify
        self.requests.close()
        self.requests = _CredentialedRequests(self)
        self.requests.verify = verify  # the SDK's bundle of Meta's CA chain
        if proxies:
            self.requests.proxies.update(proxies)
        if graph_url:
            self.GRAPH = graph_url.rstrip("/")
        self.name, self.proof = name, proof
        self.vault = vault if vault is not None else TokenVaultClient()
        self._lock = threading.Lock()
        self._current = None      # (token, proof params, fetched at) while it may be reused
        self._removed = None      # the NotFoundError once a watch saw the token removed
        self._watching = False    # a watch is connected: a change will reach us
        self._closed = threading.Event()
        self._watch = None
        self.refresh()
        if watch:
            self._thread = threading.Thread(target=self._follow, name="tokenvault-watch %s" % name, daemon=True)
            self._thread.start()

    # -- credentials ---------------------------------------------------------------------------

    def credentials(self):
        """{"access_token", "appsecret_proof"[, "appsecret_time"]} for the next request."""
        with self._lock:
            current, removed, watching = self._current, self._removed, self._watching
        if removed is not None:
            raise removed
        stale = current is None or not watching or (
            self.proof == "timed" and time.monotonic() - current[2] >= TIMED_PROOF_REUSE)
        if stale:
            current = self.refresh()
        return dict(current[1], access_token=current[0])

    def refresh(self):
        """Reads the token and its proof from the daemon now."""
        try:
            reply = self.vault.get(self.name, proof=self.proof)
        except NotFoundError as e:
            with self._lock:
                self._current, self._removed = None, e
            raise
        if "appsecret_proof" not in reply:
            raise TokenVaultError("the daemon sent no appsecret_proof for %s: the caller's policy rule needs "
                                  "`proof = true`, and the token an app (`put --app`)" % self.name, "denied")
        params = {"appsecret_proof": reply["appsecret_proof"]}
        if "appsecret_time" in reply:
            params["appsecret_time"] = str(reply["appsecret_time"])
        current = (reply["token"], params, time.monotonic())
        with self._lock:
            self._current, self._removed = current, None
            self.access_token = reply["token"]
            self.appsecret_proof = reply["appsecret_proof"]
        return current

    # -- following changes ---------------------------------------------------------------------

    def _follow(self):
        backoff = 0.2
        while not self._closed.is_set():
            try:
                self._watch = self.vault.watch([self.name])
                with self._lock:
                    self._watching = True
                backoff = 0.2
                self._refresh_quietly()  # a change made while we were not watching
                for change in self._watch:
                    if change["change"] == "removed":
                        with self._lock:
                            self._current = None
                            self._removed = NotFoundError("%s was removed from the vault" % self.name, "not_found")
                    else:
                        self._refresh_quietly()
            except TokenVaultError:
                pass
            finally:
                with self._lock:
                    self._watching = False
            if self._closed.wait(backoff):
                return
            backoff = min(backoff * 2, 5.0)

    def _refresh_quietly(self):
        try:
            self.refresh()
        except TokenVaultError:
            with self._lock:
                if self._removed is None:
                    self._current = None  # read through on the next request, which then raises the error

    def close(self):
        """Stops following changes and closes the HTTP session and the vault connection."""
        self._closed.set()
        if self._watch is not None:
            self._watch.close()
        self.requests.close()
        self.vault.close()


def facebook_ads_api(name, vault=None, proof="timed", watch=True, api_version=None, app_id=None, graph_url=None,
                     proxies=None, timeout=None, set_default=True):
    """A FacebookAdsApi for the vault token `name` (made the SDK's default unless set_default=False).
    `vault`: a TokenVaultClient (default: $TOKENVAULT_SOCKET). Raises the vault's error if the token cannot
    be read now. `graph_url` replaces https://graph.facebook.com (a test stand-in, a proxy)."""
    session = VaultSession(name, vault=vault, proof=proof, watch=watch, app_id=app_id, graph_url=graph_url,
                           proxies=proxies, timeout=timeout)
    api = FacebookAdsApi(session, api_version)
    api.vault_session = session
    if set_default:
        FacebookAdsApi.set_default_api(api)
    return api
