"""A loopback HTTP server that answers like Google's OAuth 2.0 endpoints and the Drive API v2.

The real ``googleapiclient``, ``oauth2client`` and ``pydrive2`` code can be pointed at it: client
secrets and service-account key files carry its ``auth_uri`` and ``token_uri``, and the Drive
service is built with ``client_options={"api_endpoint": server.api_endpoint}``. It serves the files
of an optional :class:`FakeDrive` (so one synthetic world can be fetched anonymously or through the
API) plus its own. Faults are queued per file id and consumed one per authorised media request
(and, for those that make sense there, per copy): ``userRateLimit``, ``rateLimit``, ``429``,
``quota``, ``cannotDownload``, ``notFound``, ``500``, ``503``, ``truncate``, ``corrupt``, ``ok``;
an error fault written ``NAME:retry-after=N`` also sends ``Retry-After: N``.
"""

from __future__ import annotations

import base64
import datetime
import functools
import hashlib
import json
import mimetypes
import re
import secrets
import threading
import time
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple
from urllib.parse import parse_qs, quote, unquote, urlencode, urlparse

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from oauth2client.client import OOB_CALLBACK_URN

from ffhq_aging_assets_tests.fake_drive import FakeDrive

DRIVE = "https://www.googleapis.com/auth/drive"
DRIVE_FILE = f"{DRIVE}.file"
DRIVE_READONLY = f"{DRIVE}.readonly"
DRIVE_METADATA = f"{DRIVE}.metadata"
DRIVE_METADATA_READONLY = f"{DRIVE}.metadata.readonly"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
DEFAULT_USER = "researcher@example.com"
PUBLISHER = "publisher@example.com"
TOKEN_SECONDS = 3599
GOOGLE_ISSUER = "https://accounts.google.com"

_JSON = "application/json; charset=UTF-8"
_TOKEN_JSON = "application/json; charset=utf-8"
_HTML = "text/html; charset=UTF-8"
_REALM = 'Bearer realm="https://accounts.google.com/"'
_ORIGINALS_DATE = "2020-06-15T12:00:00.000Z"
_ID_TOKEN_SCOPES = {
    "openid",
    "email",
    "profile",
    "https://www.googleapis.com/auth/userinfo.email",
    "https://www.googleapis.com/auth/userinfo.profile",
}
_SEE_CONSOLE = (
    "Expected OAuth 2 access token, login cookie or other valid authentication credential. "
    "See https://developers.google.com/identity/sign-in/web/devconsole-project."
)
_INSUFFICIENT_SCOPE = "Insufficient Permission: Request had insufficient authentication scopes."
_SHORT_LIVED = (
    "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. "
    "Check your iat and exp values in the JWT claim."
)

# name -> (status, domain, reason, message, status word or None)
_ERROR_FAULTS: dict[str, tuple[int, str, str, str, str | None]] = {
    "userRateLimit": (
        403,
        "usageLimits",
        "userRateLimitExceeded",
        "User Rate Limit Exceeded",
        None,
    ),
    "rateLimit": (403, "usageLimits", "rateLimitExceeded", "Rate Limit Exceeded", None),
    "429": (429, "usageLimits", "rateLimitExceeded", "Rate Limit Exceeded", None),
    "quota": (
        403,
        "usageLimits",
        "downloadQuotaExceeded",
        "The download quota for this file has been exceeded.",
        None,
    ),
    "cannotDownload": (
        403,
        "global",
        "cannotDownloadFile",
        "This file cannot be downloaded by the user.",
        None,
    ),
    "500": (500, "global", "backendError", "Backend Error", None),
    "503": (503, "global", "backendError", "Backend Error", "UNAVAILABLE"),
}
FAULTS = frozenset({*_ERROR_FAULTS, "notFound", "truncate", "corrupt", "ok"})
# A copy is made server-side, so faults about handing bytes to this user stay queued for the
# media request they describe; that is what makes "copy it, then download the copy" a workaround.
_MEDIA_ONLY = frozenset({"quota", "cannotDownload", "truncate", "corrupt"})

_NOT_FOUND_PAGE = b"""<!DOCTYPE html><html lang=en><meta charset=utf-8>
<title>Error 404 (Not Found)!!1</title><p><b>404.</b> <ins>That's an error.</ins>
<p>The requested URL was not found on this server.
<ins>That's all we know.</ins>"""

_AUTH_ERROR_PAGE = """<!DOCTYPE html><html lang="en"><head><title>Sign in - Google Accounts</title>
</head><body>
<div id="error"><h1>Access blocked: authorisation error</h1><p>{detail}</p>
<p>Error {status}: {error}</p></div></body></html>"""


class Request(NamedTuple):
    """One request as the server saw it."""

    at: float
    method: str
    path: str
    file_id: str | None
    status: int
    peer: tuple[str, int]
    who: str | None


class Copy(NamedTuple):
    source_id: str
    file_id: str
    who: str


class Deletion(NamedTuple):
    file_id: str
    who: str


@dataclass
class AccessToken:
    """An issued access token; ``expires_at`` is ``time.time()`` based."""

    who: str
    scopes: tuple[str, ...]
    expires_at: float
    client_id: str | None = None
    refresh_token: str | None = None
    revoked: bool = False

    @property
    def valid(self) -> bool:
        return not self.revoked and time.time() < self.expires_at


@dataclass
class RefreshGrant:
    client_id: str
    who: str
    scopes: tuple[str, ...]
    revoked: bool = False


@dataclass
class ServiceKey:
    public_key: rsa.RSAPublicKey
    certificate: str | None = None


@dataclass
class _Code:
    client_id: str
    redirect_uri: str
    scopes: tuple[str, ...]
    who: str
    offline: bool
    challenge: str | None
    challenge_method: str
    used: bool = False


@dataclass
class _File:
    data: bytes
    name: str
    # None: the publisher's file, readable by anyone signed in; else the only user who sees it.
    owner: str | None
    created: str = _ORIGINALS_DATE
    anonymous_url: str | None = None
    parents: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Reply:
    status: int
    body: bytes = b""
    ctype: str = _JSON
    headers: dict[str, str] = field(default_factory=dict)
    # Bytes actually written before hanging up, for ``truncate``; None sends the whole body.
    send: int | None = None
    file_id: str | None = None
    who: str | None = None


class _Unsatisfiable(Exception):
    pass


class FakeGoogle:
    """The server, its accounts, tokens and files, and what it was asked."""

    def __init__(self, drive: FakeDrive | None = None) -> None:
        self.drive = drive
        self.users: dict[str, str] = {DEFAULT_USER: "FFHQ Researcher"}
        self.current_user = DEFAULT_USER
        self.clients: dict[str, str] = {}
        self.auth_requests: list[dict[str, str]] = []
        self.deny_next_auth = False
        self.access_tokens: dict[str, AccessToken] = {}
        self.refresh_tokens: dict[str, RefreshGrant] = {}
        self.grants: Counter[str] = Counter()
        self.copies: list[Copy] = []
        self.deleted: list[Deletion] = []
        self.log: list[Request] = []
        self.delay_seconds = 0.0
        self.stopping = threading.Event()
        self._files: dict[str, _File] = {}
        self._faults: defaultdict[str, deque[str]] = defaultdict(deque)
        self._codes: dict[str, _Code] = {}
        self._service_keys: defaultdict[str, dict[str, ServiceKey]] = defaultdict(dict)
        self._media: Counter[str] = Counter()
        self._media_peers: defaultdict[str, set[int]] = defaultdict(set)
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.api_endpoint = f"{self.base}/drive/v2/"
        self.token_uri = f"{self.base}/token"
        self.auth_uri = f"{self.base}/o/oauth2/auth"
        self.revoke_uri = f"{self.base}/revoke"
        self.certs_uri = f"{self.base}/oauth2/v1/certs"
        # A short poll keeps stop() quick; the default half second adds up over many tests.
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def start(self) -> FakeGoogle:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> FakeGoogle:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # Accounts and credentials.

    def add_user(self, email: str, name: str) -> None:
        with self._lock:
            self.users[email] = name

    def add_client(self, client_id: str, client_secret: str) -> None:
        with self._lock:
            self.clients[client_id] = client_secret

    def client_secrets_json(
        self,
        client_id: str | None = None,
        client_secret: str | None = None,
        *,
        register: bool = True,
    ) -> dict[str, Any]:
        """A "Desktop app" client secrets file as the Cloud console downloads it, aimed here."""
        if client_id is None:
            digits = 10**11 + secrets.randbelow(9 * 10**11)
            client_id = f"{digits}-{secrets.token_hex(16)}.apps.googleusercontent.com"
        if client_secret is None:
            client_secret = "GOCSPX-" + secrets.token_urlsafe(21)
        if register:
            self.add_client(client_id, client_secret)
        return {
            "installed": {
                "client_id": client_id,
                "project_id": "ffhq-test",
                "auth_uri": self.auth_uri,
                "token_uri": self.token_uri,
                "auth_provider_x509_cert_url": self.certs_uri,
                "client_secret": client_secret,
                "redirect_uris": ["http://localhost"],
            }
        }

    def add_service_key(
        self,
        email: str,
        key_id: str,
        public_key: rsa.RSAPublicKey,
        certificate: str | None = None,
    ) -> None:
        with self._lock:
            self._service_keys[email][key_id] = ServiceKey(public_key, certificate)

    def remove_service_key(self, email: str, key_id: str) -> None:
        with self._lock:
            self._service_keys[email].pop(key_id, None)

    def revoke(self, refresh_token: str) -> None:
        """Revoke a grant, as the user removing the app's access does: its access tokens too."""
        with self._lock:
            self._revoke_grant(refresh_token)

    def revoke_all(self) -> None:
        with self._lock:
            for refresh_token in self.refresh_tokens:
                self._revoke_grant(refresh_token)
            for token in self.access_tokens.values():
                if token.client_id is not None:
                    token.revoked = True

    def expire_tokens(self) -> None:
        """Every access token issued so far stops working; refresh tokens still do."""
        now = time.time()
        with self._lock:
            for token in self.access_tokens.values():
                token.expires_at = min(token.expires_at, now)

    def _revoke_grant(self, refresh_token: str) -> None:
        self.refresh_tokens[refresh_token].revoked = True
        for token in self.access_tokens.values():
            if token.refresh_token == refresh_token:
                token.revoked = True

    # Files and faults.

    def add(
        self, file_id: str, data: bytes, name: str = "file", *, owner: str | None = None
    ) -> str:
        """Serve ``data`` as file ``file_id``; ``owner`` makes it that user's private file."""
        with self._lock:
            self._files[file_id] = _File(data, name, owner)
        return file_id

    def fail(self, file_id: str, *faults: str) -> None:
        """Queue faults for the next authorised requests of a file's bytes (or copies of it)."""
        for fault in faults:
            _parse_fault(fault)
        if self._find(file_id) is None:
            raise KeyError(file_id)
        with self._lock:
            self._faults[file_id].extend(faults)

    def media_requests(self, file_id: str) -> int:
        """Media (``alt=media``) requests for the file, whatever they were answered."""
        with self._lock:
            return self._media[file_id]

    def peers_for(self, file_id: str) -> set[int]:
        """Client ports that asked for the file's media."""
        with self._lock:
            return set(self._media_peers[file_id])

    def _find(self, file_id: str) -> _File | None:
        with self._lock:
            own = self._files.get(file_id)
        if own is not None:
            return own
        if self.drive is not None and (df := self.drive.files.get(file_id)) is not None:
            return _File(df.data, df.name, None, anonymous_url=self.drive.url(file_id))
        return None

    def _visible(self, file_id: str, who: str) -> _File | None:
        found = self._find(file_id)
        if found is None or found.owner not in (None, who):
            return None
        return found

    def _next_fault(self, file_id: str, *, for_copy: bool = False) -> str:
        with self._lock:
            queue = self._faults.get(file_id)
            if not queue:
                return "ok"
            if for_copy and _parse_fault(queue[0])[0] in _MEDIA_ONLY:
                return "ok"
            return queue.popleft()

    # HTTP.

    def _dispatch(
        self,
        method: str,
        path: str,
        query_string: str,
        headers: Message,
        body: bytes,
        peer: tuple[str, int],
    ) -> _Reply:
        query = {k: v[0] for k, v in parse_qs(query_string, keep_blank_values=True).items()}
        if path == "/o/oauth2/auth" and method == "GET":
            return self._authorize(query)
        if path == "/token" and method == "POST":
            return self._token(_form(body), headers)
        if path == "/revoke" and method in ("GET", "POST"):
            return self._revoke_endpoint(query.get("token") or _form(body).get("token", ""))
        if path == "/oauth2/v1/certs" and method == "GET":
            return _json_reply(200, {_server_kid(): _server_certificate()})
        if path.startswith("/robot/v1/metadata/x509/") and method == "GET":
            email = unquote(path.rsplit("/", 1)[1])
            with self._lock:
                keys = dict(self._service_keys.get(email, {}))
            if not keys:
                return _Reply(404, _NOT_FOUND_PAGE, _HTML)
            return _json_reply(200, {k: v.certificate for k, v in keys.items() if v.certificate})
        if path.startswith("/drive/v2/"):
            return self._drive(method, path[len("/drive/v2/") :], query, headers, body, peer)
        return _Reply(404, _NOT_FOUND_PAGE, _HTML)

    # OAuth.

    def _authorize(self, query: dict[str, str]) -> _Reply:
        with self._lock:
            self.auth_requests.append(dict(query))
        client_id = query.get("client_id", "")
        redirect_uri = query.get("redirect_uri", "")
        with self._lock:
            known = client_id in self.clients
        # Google never redirects for these: it cannot trust the redirect_uri of a request it
        # cannot attribute, so the user sees an error page and the app sees nothing.
        if not known:
            return _auth_page(401, "invalid_client", "The OAuth client was not found.")
        if redirect_uri == OOB_CALLBACK_URN:
            return _auth_page(
                400,
                "invalid_request",
                "The out-of-band (OOB) flow has been blocked in order to keep users secure.",
            )
        if not _is_loopback(redirect_uri):
            return _auth_page(
                400,
                "redirect_uri_mismatch",
                "You can't sign in to this app because it doesn't comply with Google's OAuth "
                "2.0 policy.",
            )
        if not query.get("scope"):
            return _auth_page(400, "invalid_request", "Missing required parameter: scope")
        state = {"state": query["state"]} if "state" in query else {}
        if query.get("response_type") != "code":
            return _redirect(redirect_uri, {**state, "error": "unsupported_response_type"})
        with self._lock:
            denied, self.deny_next_auth = self.deny_next_auth, False
            hint = query.get("login_hint")
            who = hint if hint in self.users else self.current_user
        if denied:
            return _redirect(redirect_uri, {**state, "error": "access_denied"}, who=who)
        code = "4/0A" + secrets.token_urlsafe(48)
        scopes = tuple(query["scope"].split())
        with self._lock:
            self._codes[code] = _Code(
                client_id,
                redirect_uri,
                scopes,
                who,
                offline=query.get("access_type") == "offline",
                challenge=query.get("code_challenge"),
                challenge_method=query.get("code_challenge_method", "plain"),
            )
        return _redirect(redirect_uri, {**state, "code": code, "scope": " ".join(scopes)}, who=who)

    def _token(self, form: dict[str, str], headers: Message) -> _Reply:
        grant_type = form.get("grant_type", "")
        if grant_type == "authorization_code":
            status, body, who = self._exchange_code(form, headers)
        elif grant_type == "refresh_token":
            status, body, who = self._refresh(form, headers)
        elif grant_type == JWT_BEARER:
            status, body, who = self._jwt_bearer(form.get("assertion", ""))
        else:
            status, who = 400, None
            body = {
                "error": "unsupported_grant_type",
                "error_description": f"Invalid grant_type: {grant_type}",
            }
        if status == 200:
            with self._lock:
                self.grants[grant_type] += 1
        headers_out = {"Cache-Control": "no-cache, no-store, max-age=0, must-revalidate"}
        return _Reply(status, _dumps(body), _TOKEN_JSON, headers_out, who=who)

    def _client(
        self, form: dict[str, str], headers: Message
    ) -> tuple[str | None, dict[str, str] | None]:
        client_id, secret = form.get("client_id"), form.get("client_secret")
        basic = headers.get("Authorization", "")
        if basic.startswith("Basic "):
            decoded = base64.b64decode(basic[6:]).decode()
            client_id, _, secret = (unquote(part) for part in decoded.partition(":"))
        with self._lock:
            expected = self.clients.get(client_id or "")
        if expected is None:
            return None, {
                "error": "invalid_client",
                "error_description": "The OAuth client was not found.",
            }
        if secret != expected:
            return None, {"error": "invalid_client", "error_description": "Unauthorized"}
        return client_id, None

    def _issue(
        self,
        who: str,
        scopes: tuple[str, ...],
        *,
        client_id: str | None,
        refresh_token: str | None,
        prefix: str,
    ) -> str:
        access_token = prefix + secrets.token_urlsafe(96)
        with self._lock:
            self.access_tokens[access_token] = AccessToken(
                who, scopes, time.time() + TOKEN_SECONDS, client_id, refresh_token
            )
        return access_token

    def _exchange_code(
        self, form: dict[str, str], headers: Message
    ) -> tuple[int, dict[str, Any], str | None]:
        client_id, error = self._client(form, headers)
        if error is not None:
            return 401, error, None
        with self._lock:
            code = self._codes.get(form.get("code", ""))
        if code is None:
            return _oauth_error("invalid_grant", "Malformed auth code.")
        if code.used or code.client_id != client_id:
            return _oauth_error("invalid_grant", "Bad Request")
        if form.get("redirect_uri") != code.redirect_uri:
            return _oauth_error("redirect_uri_mismatch", "Bad Request")
        if code.challenge is not None:
            verifier = form.get("code_verifier")
            if not verifier:
                return _oauth_error("invalid_grant", "Missing code verifier.")
            if code.challenge_method == "S256":
                verifier = _b64url(hashlib.sha256(verifier.encode()).digest())
            if verifier != code.challenge:
                return _oauth_error("invalid_grant", "Invalid code verifier.")
        with self._lock:
            if code.used:
                return _oauth_error("invalid_grant", "Bad Request")
            code.used = True
        refresh_token = None
        if code.offline:
            refresh_token = "1//0" + secrets.token_urlsafe(75)
            with self._lock:
                self.refresh_tokens[refresh_token] = RefreshGrant(
                    code.client_id, code.who, code.scopes
                )
        access_token = self._issue(
            code.who,
            code.scopes,
            client_id=code.client_id,
            refresh_token=refresh_token,
            prefix="ya29.a0",
        )
        body: dict[str, Any] = {"access_token": access_token, "expires_in": TOKEN_SECONDS}
        if refresh_token is not None:
            body["refresh_token"] = refresh_token
        body |= {"scope": " ".join(code.scopes), "token_type": "Bearer"}
        if _ID_TOKEN_SCOPES & set(code.scopes):
            body["id_token"] = self._id_token(code.who, code.client_id)
        return 200, body, code.who

    def _refresh(
        self, form: dict[str, str], headers: Message
    ) -> tuple[int, dict[str, Any], str | None]:
        client_id, error = self._client(form, headers)
        if error is not None:
            return 401, error, None
        refresh_token = form.get("refresh_token", "")
        with self._lock:
            grant = self.refresh_tokens.get(refresh_token)
        if grant is None or grant.revoked:
            return _oauth_error("invalid_grant", "Token has been expired or revoked.")
        if grant.client_id != client_id:
            return _oauth_error("unauthorized_client", "Unauthorized")
        access_token = self._issue(
            grant.who,
            grant.scopes,
            client_id=client_id,
            refresh_token=refresh_token,
            prefix="ya29.a0",
        )
        body: dict[str, Any] = {
            "access_token": access_token,
            "expires_in": TOKEN_SECONDS,
            "scope": " ".join(grant.scopes),
            "token_type": "Bearer",
        }
        if _ID_TOKEN_SCOPES & set(grant.scopes):
            body["id_token"] = self._id_token(grant.who, grant.client_id)
        return 200, body, grant.who

    def _jwt_bearer(self, assertion: str) -> tuple[int, dict[str, Any], str | None]:
        bad_signature = {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}
        parts = assertion.split(".")
        try:
            header = json.loads(_b64url_decode(parts[0]))
            claims = json.loads(_b64url_decode(parts[1]))
            signature = _b64url_decode(parts[2])
        except (IndexError, ValueError):
            return 400, bad_signature, None
        if (
            len(parts) != 3
            or not isinstance(header, dict)
            or not isinstance(claims, dict)
            or header.get("alg") != "RS256"
        ):
            return 400, bad_signature, None
        issuer = claims.get("iss", "")
        with self._lock:
            keys = dict(self._service_keys.get(issuer, {}))
        kid = header.get("kid")
        candidates = [keys[kid]] if kid in keys else ([] if kid else list(keys.values()))
        signing_input = f"{parts[0]}.{parts[1]}".encode()
        if not any(_verifies(k.public_key, signing_input, signature) for k in candidates):
            return 400, bad_signature, None
        if claims.get("aud") != self.token_uri:
            wrong = f"Invalid JWT: Failed audience check. The right audience is {self.token_uri}"
            return 400, {"error": "invalid_grant", "error_description": wrong}, None
        now = time.time()
        iat, exp = claims.get("iat"), claims.get("exp")
        if (
            not isinstance(iat, int | float)
            or not isinstance(exp, int | float)
            or exp <= now
            or iat > now + 300
            or exp - iat > 3600
        ):
            return 400, {"error": "invalid_grant", "error_description": _SHORT_LIVED}, None
        scope = claims.get("scope", "")
        if not scope:
            bad_scope = "Invalid OAuth scope or ID token audience provided."
            return 400, {"error": "invalid_scope", "error_description": bad_scope}, None
        if claims.get("sub", issuer) != issuer:
            refused = (
                "Client is unauthorized to retrieve access tokens using this method, or client "
                "not authorized for any of the scopes requested."
            )
            return 401, {"error": "unauthorized_client", "error_description": refused}, None
        access_token = self._issue(
            issuer, tuple(scope.split()), client_id=None, refresh_token=None, prefix="ya29.c."
        )
        body = {"access_token": access_token, "expires_in": TOKEN_SECONDS, "token_type": "Bearer"}
        return 200, body, issuer

    def _revoke_endpoint(self, token: str) -> _Reply:
        with self._lock:
            if token in self.refresh_tokens:
                self._revoke_grant(token)
                return _Reply(200, b"", _TOKEN_JSON)
            access = self.access_tokens.get(token)
            if access is not None and access.valid:
                access.revoked = True
                if access.refresh_token is not None:
                    self._revoke_grant(access.refresh_token)
                return _Reply(200, b"", _TOKEN_JSON)
        body = {"error": "invalid_token", "error_description": "Token expired or revoked"}
        return _Reply(400, _dumps(body), _TOKEN_JSON)

    def _id_token(self, who: str, client_id: str) -> str:
        now = int(time.time())
        with self._lock:
            name = self.users.get(who, who)
        claims = {
            "iss": GOOGLE_ISSUER,
            "azp": client_id,
            "aud": client_id,
            "sub": _numeric_id(who),
            "email": who,
            "email_verified": True,
            "name": name,
            "iat": now,
            "exp": now + TOKEN_SECONDS,
        }
        header = {"alg": "RS256", "kid": _server_kid(), "typ": "JWT"}
        return _sign_jwt(_rsa_key(1), header, claims)

    # Drive API v2.

    def _drive(
        self,
        method: str,
        rest: str,
        query: dict[str, str],
        headers: Message,
        body: bytes,
        peer: tuple[str, int],
    ) -> _Reply:
        parts = [unquote(p) for p in rest.split("/")]
        file_id = parts[1] if len(parts) >= 2 and parts[0] == "files" and parts[1] else None
        media = method == "GET" and len(parts) == 2 and query.get("alt") == "media"
        if media and file_id is not None:
            with self._lock:
                self._media[file_id] += 1
                self._media_peers[file_id].add(peer[1])
            if self.delay_seconds:
                self.stopping.wait(self.delay_seconds)
        reply = self._drive_authorised(method, parts, file_id, query, headers, body, media)
        reply.file_id = file_id
        return reply

    def _drive_authorised(
        self,
        method: str,
        parts: list[str],
        file_id: str | None,
        query: dict[str, str],
        headers: Message,
        body: bytes,
        media: bool,
    ) -> _Reply:
        authorization = headers.get("Authorization")
        if not authorization:
            return _unauthenticated(missing=True)
        scheme, _, value = authorization.partition(" ")
        with self._lock:
            token = self.access_tokens.get(value.strip()) if scheme.lower() == "bearer" else None
            valid = token is not None and token.valid
        if token is None or not valid:
            return _unauthenticated(missing=False)
        who, scopes = token.who, set(token.scopes)
        if parts == ["about"] and method == "GET":
            reply = self._about(who, scopes)
        elif file_id is not None and len(parts) == 2 and method == "GET":
            reply = self._get(file_id, who, scopes, query, headers, media)
        elif file_id is not None and len(parts) == 2 and method == "DELETE":
            reply = self._delete(file_id, who, scopes)
        elif file_id is not None and parts[2:] == ["copy"] and method == "POST":
            reply = self._copy(file_id, who, scopes, query, body)
        else:
            reply = _Reply(404, _NOT_FOUND_PAGE, _HTML)
        reply.who = who
        return reply

    def _about(self, who: str, scopes: set[str]) -> _Reply:
        if not any(s == DRIVE or s.startswith(DRIVE + ".") for s in scopes):
            return _insufficient_scope(DRIVE_METADATA_READONLY)
        with self._lock:
            name = self.users.get(who, who)
            used = sum(len(f.data) for f in self._files.values() if f.owner == who)
        permission_id = _numeric_id(who)
        return _json_reply(
            200,
            {
                "kind": "drive#about",
                "etag": f'"{_numeric_id(who + "about")}"',
                "selfLink": f"{self.api_endpoint}about",
                "name": name,
                "quotaBytesTotal": "16106127360",
                "quotaBytesUsed": str(used),
                "quotaBytesUsedAggregate": str(used),
                "quotaBytesUsedInTrash": "0",
                "quotaType": "LIMITED",
                "rootFolderId": "0A" + hashlib.sha1(who.encode()).hexdigest()[:17],
                "domainSharingPolicy": "allowedWithWarning",
                "permissionId": permission_id,
                "isCurrentAppInstalled": False,
                "languageCode": "en",
                "user": {
                    "kind": "drive#user",
                    "displayName": name,
                    "isAuthenticatedUser": True,
                    "permissionId": permission_id,
                    "emailAddress": who,
                },
            },
        )

    def _get(
        self,
        file_id: str,
        who: str,
        scopes: set[str],
        query: dict[str, str],
        headers: Message,
        media: bool,
    ) -> _Reply:
        readers = {DRIVE, DRIVE_READONLY}
        if not media:
            readers |= {DRIVE_METADATA, DRIVE_METADATA_READONLY}
        if not scopes & (readers | {DRIVE_FILE}):
            return _insufficient_scope(DRIVE_READONLY)
        found = self._visible(file_id, who)
        if found is None:
            return _not_found(file_id)
        if not scopes & readers and found.owner != who:
            return _insufficient_scope(DRIVE_READONLY)
        if not media:
            return _json_reply(200, _pick(self._metadata(file_id, found, who), query.get("fields")))
        fault, retry_after = _parse_fault(self._next_fault(file_id))
        extra = {"Retry-After": retry_after} if retry_after else {}
        if fault in _ERROR_FAULTS:
            return _fault_reply(fault, extra)
        if fault == "notFound":
            reply = _not_found(file_id)
            reply.headers |= extra
            return reply
        data = found.data
        try:
            span = _byte_range(headers.get("Range"), len(data))
        except _Unsatisfiable:
            return _Reply(
                416,
                b"",
                "text/html; charset=UTF-8",
                {"Content-Range": f"bytes */{len(data)}"},
            )
        out = {"Content-Disposition": f'attachment; filename="{found.name}"'}
        if span is None:
            status, chunk = 200, data
        else:
            start, end = span
            status, chunk = 206, data[start : end + 1]
            out["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        if fault == "corrupt" and chunk:
            flipped = bytearray(chunk)
            flipped[len(flipped) // 2] ^= 0xFF
            chunk = bytes(flipped)
        reply = _Reply(status, chunk, "application/octet-stream", out)
        if fault == "truncate":
            reply.send = len(chunk) // 2
        return reply

    def _copy(
        self, file_id: str, who: str, scopes: set[str], query: dict[str, str], body: bytes
    ) -> _Reply:
        if not scopes & {DRIVE, DRIVE_FILE}:
            return _insufficient_scope(DRIVE_FILE)
        try:
            request = json.loads(body) if body.strip() else {}
            if not isinstance(request, dict):
                raise ValueError(body)
        except ValueError:
            return _api_error(400, "Parse Error", [_detail("Parse Error", "global", "parseError")])
        source = self._visible(file_id, who)
        if source is None:
            return _not_found(file_id)
        fault, retry_after = _parse_fault(self._next_fault(file_id, for_copy=True))
        extra = {"Retry-After": retry_after} if retry_after else {}
        if fault in _ERROR_FAULTS:
            return _fault_reply(fault, extra)
        if fault == "notFound":
            reply = _not_found(file_id)
            reply.headers |= extra
            return reply
        new_id = "1" + secrets.token_urlsafe(24)
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        title = request.get("title") or f"Copy of {source.name}"
        copy = _File(source.data, title, who, created=now, parents=request.get("parents") or [])
        with self._lock:
            self._files[new_id] = copy
            self.copies.append(Copy(file_id, new_id, who))
        return _json_reply(200, _pick(self._metadata(new_id, copy, who), query.get("fields")))

    def _delete(self, file_id: str, who: str, scopes: set[str]) -> _Reply:
        if not scopes & {DRIVE, DRIVE_FILE}:
            return _insufficient_scope(DRIVE_FILE)
        found = self._visible(file_id, who)
        if found is None:
            return _not_found(file_id)
        if found.owner != who:
            message = "The user does not have sufficient permissions for this file."
            detail = _detail(message, "global", "insufficientFilePermissions")
            return _api_error(403, message, [detail])
        with self._lock:
            self._files.pop(file_id, None)
            self.deleted.append(Deletion(file_id, who))
        return _Reply(204, b"", _JSON)

    def _metadata(self, file_id: str, found: _File, who: str) -> dict[str, Any]:
        own = found.owner == who
        owner = found.owner or PUBLISHER
        with self._lock:
            owner_name = self.users.get(owner, "FFHQ Publisher" if owner == PUBLISHER else owner)
        md5 = hashlib.md5(found.data).hexdigest()
        meta: dict[str, Any] = {
            "kind": "drive#file",
            "id": file_id,
            "etag": f'"{md5[:16]}"',
            "selfLink": f"{self.api_endpoint}files/{file_id}",
            "alternateLink": f"{self.base}/file/d/{file_id}/view?usp=drivesdk",
            "title": found.name,
            "mimeType": mimetypes.guess_type(found.name)[0] or "application/octet-stream",
            "labels": {
                "starred": False,
                "hidden": False,
                "trashed": False,
                "restricted": False,
                "viewed": own,
            },
            "createdDate": found.created,
            "modifiedDate": found.created,
            "downloadUrl": f"{self.api_endpoint}files/{file_id}?alt=media&source=downloadUrl",
            "parents": found.parents,
            "originalFilename": found.name,
            "fileExtension": found.name.rpartition(".")[2] if "." in found.name else "",
            "md5Checksum": md5,
            "fileSize": str(len(found.data)),
            "quotaBytesUsed": str(len(found.data)) if own else "0",
            "ownerNames": [owner_name],
            "owners": [
                {
                    "kind": "drive#user",
                    "displayName": owner_name,
                    "isAuthenticatedUser": own,
                    "permissionId": _numeric_id(owner),
                    "emailAddress": owner,
                }
            ],
            "userPermission": {
                "kind": "drive#permission",
                "id": "me",
                "role": "owner" if own else "reader",
                "type": "user",
            },
            "editable": own,
            "copyable": True,
            "shared": not own,
            "explicitlyTrashed": False,
            "capabilities": {
                "canCopy": True,
                "canDownload": True,
                "canEdit": own,
                "canDelete": own,
                "canTrash": own,
            },
        }
        if found.anonymous_url is not None:
            meta["webContentLink"] = f"{found.anonymous_url}&export=download"
        return meta

    def _record(self, request: Request) -> None:
        with self._lock:
            self.log.append(request)


def throwaway_service_account_key(
    server: FakeGoogle,
    email: str = "builder@ffhq-test.iam.gserviceaccount.com",
    *,
    register: bool = True,
) -> dict[str, str]:
    """A service-account key file as the Cloud console downloads it, aimed at ``server``.

    Each call has its own ``private_key_id`` (registered with the server unless ``register`` is
    False), though the RSA key itself is generated once per process.
    """
    key = _rsa_key(0)
    key_id = secrets.token_hex(20)
    if register:
        server.add_service_key(email, key_id, key.public_key(), _certificate(key, email))
    domain = email.partition("@")[2]
    robot = domain.endswith(".iam.gserviceaccount.com")
    project_id = domain.split(".")[0] if robot else "ffhq-test"
    return {
        "type": "service_account",
        "project_id": project_id,
        "private_key_id": key_id,
        "private_key": _private_pem(key),
        "client_email": email,
        "client_id": str(10**20 + secrets.randbelow(9 * 10**20)),
        "auth_uri": server.auth_uri,
        "token_uri": server.token_uri,
        "auth_provider_x509_cert_url": server.certs_uri,
        "client_x509_cert_url": f"{server.base}/robot/v1/metadata/x509/{quote(email)}",
        "universe_domain": "googleapis.com",
    }


def _handler(google: FakeGoogle) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out as two writes; with Nagle's algorithm and the client's delayed
        # ACK, every keep-alive request would otherwise wait about 40 ms.
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            self._handle("GET")

        def do_POST(self) -> None:  # noqa: N802
            self._handle("POST")

        def do_DELETE(self) -> None:  # noqa: N802
            self._handle("DELETE")

        def do_PUT(self) -> None:  # noqa: N802
            self._handle("PUT")

        def do_PATCH(self) -> None:  # noqa: N802
            self._handle("PATCH")

        def _handle(self, method: str) -> None:
            at = time.monotonic()
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            url = urlparse(self.path)
            peer = (self.client_address[0], self.client_address[1])
            try:
                reply = google._dispatch(method, url.path, url.query, self.headers, body, peer)
            except Exception as exc:  # a bug here should reach the test as a 500, not a hang
                reply = _Reply(500, repr(exc).encode(), "text/plain; charset=utf-8")
            # Recorded before answering, so a client that has its answer also sees it logged.
            google._record(
                Request(at, method, url.path, reply.file_id, reply.status, peer, reply.who)
            )
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.ctype)
            if reply.status != 204:
                self.send_header("Content-Length", str(len(reply.body)))
            for key, value in reply.headers.items():
                self.send_header(key, value)
            self.end_headers()
            payload = reply.body if reply.send is None else reply.body[: reply.send]
            try:
                self.wfile.write(payload)
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True
            if reply.send is not None:
                self.close_connection = True

    return Handler


def _parse_fault(text: str) -> tuple[str, str | None]:
    name, _, option = text.partition(":")
    if name not in FAULTS:
        raise ValueError(f"unknown fault {text!r}; known: {sorted(FAULTS)}")
    if not option:
        return name, None
    match = re.fullmatch(r"retry-after=(\d+)", option)
    if match is None or name not in _ERROR_FAULTS and name != "notFound":
        raise ValueError(f"fault {text!r}: only error faults take retry-after=SECONDS")
    return name, match[1]


def _byte_range(header: str | None, total: int) -> tuple[int, int] | None:
    """The inclusive span a ``Range`` header asks for; None for the whole file."""
    match = re.fullmatch(r"bytes=(\d*)-(\d*)", (header or "").strip())
    # A malformed or multi-part range is ignored, as RFC 9110 allows, and the whole file sent.
    if match is None or not (match[1] or match[2]):
        return None
    if match[1]:
        start = int(match[1])
        end = int(match[2]) if match[2] else total - 1
        if end < start:
            return None
        if start >= total:
            raise _Unsatisfiable
        return start, min(end, total - 1)
    suffix = int(match[2])
    if suffix == 0 or total == 0:
        raise _Unsatisfiable
    return max(0, total - suffix), total - 1


def _pick(body: dict[str, Any], fields: str | None) -> dict[str, Any]:
    """Google's partial response, to the depth of top-level names."""
    if not fields or fields.strip() == "*":
        return body
    names, depth, current = set(), 0, ""
    for char in fields + ",":
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "," and depth == 0:
            names.add(current.strip().split("/")[0])
            current = ""
        elif depth == 0:
            current += char
    return {k: v for k, v in body.items() if k in names}


def _oauth_error(
    error: str, description: str, status: int = 400
) -> tuple[int, dict[str, Any], None]:
    return status, {"error": error, "error_description": description}, None


def _detail(message: str, domain: str, reason: str, **where: str) -> dict[str, str]:
    return {"message": message, "domain": domain, "reason": reason, **where}


def _api_error(
    code: int,
    message: str,
    errors: list[dict[str, str]],
    status: str | None = None,
    headers: dict[str, str] | None = None,
) -> _Reply:
    error: dict[str, Any] = {"code": code, "message": message, "errors": errors}
    if status is not None:
        error["status"] = status
    return _Reply(code, _dumps({"error": error}), _JSON, dict(headers or {}))


def _fault_reply(fault: str, headers: dict[str, str]) -> _Reply:
    code, domain, reason, message, status = _ERROR_FAULTS[fault]
    return _api_error(code, message, [_detail(message, domain, reason)], status, headers)


def _not_found(file_id: str) -> _Reply:
    message = f"File not found: {file_id}."
    where = {"location": "file", "locationType": "other"}
    return _api_error(404, message, [_detail(message, "global", "notFound", **where)])


def _unauthenticated(*, missing: bool) -> _Reply:
    where = {"location": "Authorization", "locationType": "header"}
    if missing:
        message = f"Request is missing required authentication credential. {_SEE_CONSOLE}"
        detail = _detail("Login Required.", "global", "required", **where)
        challenge = _REALM
    else:
        message = f"Request had invalid authentication credentials. {_SEE_CONSOLE}"
        detail = _detail("Invalid Credentials", "global", "authError", **where)
        challenge = f'{_REALM}, error="invalid_token"'
    return _api_error(401, message, [detail], "UNAUTHENTICATED", {"WWW-Authenticate": challenge})


def _insufficient_scope(needed: str) -> _Reply:
    challenge = f'{_REALM}, error="insufficient_scope", scope="{needed}"'
    detail = _detail(_INSUFFICIENT_SCOPE, "global", "insufficientPermissions")
    return _api_error(403, _INSUFFICIENT_SCOPE, [detail], None, {"WWW-Authenticate": challenge})


def _auth_page(status: int, error: str, detail: str) -> _Reply:
    page = _AUTH_ERROR_PAGE.format(detail=detail, status=status, error=error).encode()
    return _Reply(status, page, _HTML)


def _redirect(uri: str, params: dict[str, str], who: str | None = None) -> _Reply:
    joiner = "&" if "?" in uri else "?"
    location = f"{uri}{joiner}{urlencode(params)}"
    return _Reply(302, b"", _HTML, {"Location": location}, who=who)


def _is_loopback(uri: str) -> bool:
    parsed = urlparse(uri)
    return parsed.scheme == "http" and parsed.hostname in ("localhost", "127.0.0.1", "::1")


def _json_reply(status: int, body: Any) -> _Reply:
    return _Reply(status, _dumps(body), _JSON)


def _dumps(body: Any) -> bytes:
    return json.dumps(body, indent=2).encode()


def _form(body: bytes) -> dict[str, str]:
    parsed = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {k: v[0] for k, v in parsed.items()}


def _numeric_id(text: str) -> str:
    return str(int(hashlib.sha256(text.encode()).hexdigest()[:16], 16)).zfill(20)[:20]


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign_jwt(key: rsa.RSAPrivateKey, header: dict[str, Any], claims: dict[str, Any]) -> str:
    segments = [_b64url(json.dumps(part).encode()) for part in (header, claims)]
    signing_input = ".".join(segments).encode()
    signature = key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input.decode()}.{_b64url(signature)}"


def _verifies(public_key: rsa.RSAPublicKey, signing_input: bytes, signature: bytes) -> bool:
    try:
        public_key.verify(signature, signing_input, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return False
    return True


@functools.cache
def _rsa_key(slot: int) -> rsa.RSAPrivateKey:
    """One RSA key per use per process: generating 2048-bit keys costs tens of milliseconds."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@functools.cache
def _private_pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _certificate(key: rsa.RSAPrivateKey, common_name: str) -> str:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


@functools.cache
def _server_certificate() -> str:
    return _certificate(_rsa_key(1), "federated-signon.system.gserviceaccount.com")


@functools.cache
def _server_kid() -> str:
    der = (
        _rsa_key(1)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return hashlib.sha1(der).hexdigest()
