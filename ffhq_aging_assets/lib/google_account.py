"""Signing in to Google for Drive downloads: a saved user sign-in or a service account.

A person signs in once, outside every run, with ``ffhq-aging login`` (:func:`sign_in`): the
installed-app flow with a loopback redirect (``http://localhost:PORT/``), never the out-of-band
flow Google blocked in 2022. The credentials are saved owner-only and refreshed when they expire.
Steps call :func:`connect`, which only loads, refreshes and checks what was saved (or a service
account's key): anything missing, revoked or too narrow raises :class:`SignInError` at once with
what to run, because a step has no terminal and no browser.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import stat
import threading
import time
import webbrowser
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from ffhq_aging_assets.lib.files import atomic_path

log = logging.getLogger(__name__)

READONLY_SCOPE = "https://www.googleapis.com/auth/drive.readonly"
FILE_SCOPE = "https://www.googleapis.com/auth/drive.file"
# Errors of the token endpoint that no retry can fix: the grant or the client is gone.
FATAL_TOKEN_ERRORS = ("invalid_grant", "invalid_client", "unauthorized_client", "invalid_scope")
LARGEST_SECRETS_FILE = 1 << 20


class SignInError(RuntimeError):
    """No usable Google sign-in: a step fails at once with this, naming what to run."""


def scopes(copy_on_quota: bool) -> list[str]:
    """The scopes asked for: read-only, plus ``drive.file`` to make and delete copies."""
    return [READONLY_SCOPE, FILE_SCOPE] if copy_on_quota else [READONLY_SCOPE]


@dataclass(frozen=True)
class Account:
    """Which Google identity downloads, and where its files are.

    ``service_account`` (a key file) wins over the saved user sign-in when set.
    """

    client_secrets: Path
    credentials_file: Path
    service_account: Path | None = None
    copy_on_quota: bool = False
    api_endpoint: str | None = None
    timeout: float = 60.0

    def login_advice(self) -> str:
        """The command that fixes a missing or stale user sign-in."""
        words = ["ffhq-aging", "login", "--client-secrets", str(self.client_secrets)]
        words += ["--credentials-file", str(self.credentials_file)]
        if self.copy_on_quota:
            words.append("--copy-on-quota")
        return "run `" + " ".join(words) + "`"


@dataclass
class Connection:
    """A signed-in pydrive2 ``GoogleAuth`` and the Drive v2 service built on it."""

    auth: Any
    service: Any
    identity: str

    def http(self) -> Any:
        """A new authorized HTTP client: httplib2 is not thread-safe, so one per thread."""
        return self.auth.Get_Http_Object()


def read_json_file(path: Path, what: str) -> dict[str, Any]:
    """A small JSON object from ``path``, or :class:`SignInError` naming the file."""
    try:
        size = path.stat().st_size
        if size > LARGEST_SECRETS_FILE:
            raise SignInError(f"{what} {path} is {size} bytes: too large to be one")
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SignInError(f"{what} {path} does not exist") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise SignInError(f"{what} {path} cannot be read as JSON: {exc}") from None
    if not isinstance(data, dict):
        raise SignInError(f"{what} {path} is not a JSON object")
    return data


def client_config(path: Path) -> dict[str, str]:
    """The OAuth client in a ``client_secrets.json`` ("Desktop app" or "Web application")."""
    what = "the OAuth client file"
    data = read_json_file(path, what)
    client = data.get("installed") or data.get("web")
    needed = ("client_id", "client_secret", "auth_uri", "token_uri")
    if not isinstance(client, dict) or not all(isinstance(client.get(k), str) for k in needed):
        raise SignInError(
            f"{what} {path} is not an OAuth client file: it needs an 'installed' (Desktop app) "
            f"entry with {', '.join(needed)}"
        )
    return {k: client[k] for k in needed}


def write_private(path: Path, text: str) -> None:
    """Write ``text`` readable by its owner only, in an owner-only folder, through a rename."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with atomic_path(path) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(tmp, 0o600)


def _storage_class() -> type:
    from oauth2client.client import Credentials, Storage

    class PrivateFileStorage(Storage):
        """oauth2client storage that rewrites the file owner-only, atomically, under a lock.

        Several steps may refresh the same sign-in at once: the lock file serializes them, and
        oauth2client reads the file under the lock first, so a token one step refreshed is
        reused by the others instead of being refreshed again.
        """

        def __init__(self, path: Path) -> None:
            super().__init__(lock=threading.Lock())
            self.path = path
            self._lock_file: Any = None

        def acquire_lock(self) -> None:
            super().acquire_lock()
            self._lock_file = open(self.path.with_name(self.path.name + ".lock"), "a")
            fcntl.flock(self._lock_file, fcntl.LOCK_EX)

        def release_lock(self) -> None:
            try:
                if self._lock_file is not None:
                    self._lock_file.close()
                    self._lock_file = None
            finally:
                super().release_lock()

        def locked_get(self) -> Any:
            try:
                credentials = Credentials.new_from_json(self.path.read_text(encoding="utf-8"))
            except (OSError, ValueError, KeyError, TypeError):
                return None
            credentials.set_store(self)
            return credentials

        def locked_put(self, credentials: Any) -> None:
            write_private(self.path, credentials.to_json())

        def locked_delete(self) -> None:
            self.path.unlink(missing_ok=True)

    return PrivateFileStorage


def _google_auth(account: Account, backend: dict[str, Any]) -> Any:
    from pydrive2.auth import GoogleAuth

    settings = {
        "save_credentials": False,
        "get_refresh_token": True,
        "oauth_scope": scopes(account.copy_on_quota),
        **backend,
    }
    return GoogleAuth(settings=settings, http_timeout=account.timeout)


def drive_service(auth: Any, api_endpoint: str | None) -> Any:
    """The Drive v2 service (its bundled discovery document: no request to build it)."""
    from googleapiclient.discovery import build

    options = {"api_endpoint": api_endpoint} if api_endpoint else None
    return build(
        "drive",
        "v2",
        http=auth.Get_Http_Object(),
        cache_discovery=False,
        static_discovery=True,
        client_options=options,
    )


def refresh_failure(exc: BaseException) -> str | None:
    """The token endpoint's verdict when ``exc`` says the grant itself is refused, else None."""
    text = str(exc)
    for error in FATAL_TOKEN_ERRORS:
        if error in text:
            return text.removeprefix("Access token refresh failed: ")
    return None


def _refresh(auth: Any, timeout: float, advice: str, what: str) -> None:
    """Fetch a fresh access token now, so that a refused grant fails before any download."""
    import httplib2

    try:
        # A plain client: pydrive2's own is already authorized and would fetch a token first.
        auth.credentials.refresh(httplib2.Http(timeout=timeout))
    except Exception as exc:  # oauth2client's refresh errors, httplib2's, sockets
        verdict = refresh_failure(exc)
        if verdict is not None:
            raise SignInError(f"Google refused {what} ({verdict}): {advice}") from None
        raise SignInError(f"could not reach Google to refresh {what}: {exc}") from exc


def _tighten(path: Path) -> None:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        os.chmod(path, 0o600)
        log.warning("%s was readable by others (mode %o); now owner-only", path, mode)


def load_user_credentials(account: Account) -> Any:
    """The saved user sign-in, checked against the client and the scopes it must have."""
    from oauth2client.client import Credentials, OAuth2Credentials

    path = account.credentials_file
    advice = account.login_advice()
    if not path.is_file():
        raise SignInError(f"no saved Google sign-in at {path}: {advice}")
    _tighten(path)
    try:
        text = path.read_text(encoding="utf-8")
        credentials = Credentials.new_from_json(text)
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SignInError(f"{path} is not a saved Google sign-in ({exc}): {advice}") from None
    if not isinstance(credentials, OAuth2Credentials) or not credentials.refresh_token:
        raise SignInError(f"{path} holds no refresh token, so it cannot last: {advice}")
    if credentials.invalid:
        raise SignInError(f"the Google sign-in saved at {path} was revoked or expired: {advice}")
    if account.client_secrets.is_file():
        client_id = client_config(account.client_secrets)["client_id"]
        if client_id != credentials.client_id:
            raise SignInError(
                f"the sign-in at {path} was made with OAuth client {credentials.client_id}, "
                f"not with {client_id} of {account.client_secrets}: {advice}"
            )
    missing = set(scopes(account.copy_on_quota)) - set(credentials.scopes or ())
    if missing:
        raise SignInError(
            f"the sign-in at {path} lacks {', '.join(sorted(missing))}"
            + (" (needed by copy_on_quota)" if FILE_SCOPE in missing else "")
            + f": {advice}"
        )
    credentials.set_store(_storage_class()(path))
    return credentials


def connect(account: Account) -> Connection:
    """Sign in without a person: the service account's key, or the saved user sign-in.

    Raises:
        SignInError: nothing usable is there, or Google refuses it; the message says what to do.
    """
    # pydrive2 starts a browser sign-in when a token it holds expires, unless told not to; in
    # this process nothing may ever wait on a person.
    os.environ["GDRIVE_NON_INTERACTIVE"] = "1"
    if account.service_account is not None:
        key = account.service_account
        data = read_json_file(key, "the service account key")
        if data.get("type") != "service_account" or not isinstance(data.get("client_email"), str):
            raise SignInError(
                f"{key} is not a service account key (a JSON key file from the Cloud console's "
                "Service accounts page, with type 'service_account')"
            )
        auth = _google_auth(
            account,
            {
                "client_config_backend": "service",
                "service_config": {"client_json_file_path": str(key), "client_user_email": None},
            },
        )
        try:
            auth.ServiceAuth()
        except Exception as exc:  # a malformed key: oauth2client and cryptography errors
            raise SignInError(f"the service account key {key} cannot be used: {exc}") from None
        identity = data["client_email"]
        _refresh(
            auth,
            account.timeout,
            f"check that the key {key} is still active",
            f"the key of {identity}",
        )
    else:
        credentials = load_user_credentials(account)
        auth = _google_auth(
            account,
            {"client_config_backend": "file", "client_config_file": str(account.client_secrets)},
        )
        auth.credentials = credentials
        identity = f"the sign-in saved at {account.credentials_file}"
        if credentials.access_token is None or credentials.access_token_expired:
            _refresh(auth, account.timeout, account.login_advice(), identity)
    return Connection(auth, drive_service(auth, account.api_endpoint), identity)


def whoami(connection: Connection) -> str:
    """``Name <email>`` of the account, from Drive's ``about`` (a real call: it proves access)."""
    about = connection.service.about().get(fields="user").execute(http=connection.http())
    user = about.get("user") or {}
    name, email = user.get("displayName"), user.get("emailAddress")
    return f"{name} <{email}>" if name and name != email else str(email)


class _Redirect(BaseHTTPRequestHandler):
    """Takes the browser's redirect to ``http://localhost:PORT/?code=...`` and thanks it."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        query = parse_qs(urlparse(self.path).query)
        if "code" in query or "error" in query:
            self.server.query = query  # type: ignore[attr-defined]
        done = "code" in query
        body = (
            "<html><body><h3>"
            + ("Signed in; you can close this tab." if done else "Sign-in was not completed.")
            + "</h3></body></html>"
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the address carries the one-time code."""


@contextlib.contextmanager
def _loopback(port: int) -> Iterator[HTTPServer]:
    try:
        server = HTTPServer(("127.0.0.1", port), _Redirect)
    except OSError as exc:
        raise SignInError(
            f"cannot listen on localhost port {port} for the sign-in: {exc}"
        ) from None
    server.query = None  # type: ignore[attr-defined]
    server.timeout = 1.0
    try:
        yield server
    finally:
        server.server_close()


def code_from_redirect(text: str) -> str:
    """The one-time code in the ``http://localhost:PORT/?code=...`` address a browser reached."""
    return _code(parse_qs(urlparse(text.strip()).query))


def _code(query: dict[str, list[str]]) -> str:
    if "error" in query:
        raise SignInError(f"Google did not grant access: {query['error'][0]}")
    if "code" not in query:
        raise SignInError(
            "that is not the address the browser was sent to: paste the whole "
            "http://localhost:PORT/?code=... address from the browser's address bar"
        )
    return query["code"][0]


def sign_in(
    account: Account,
    *,
    open_browser: bool,
    port: int = 0,
    say: Callable[[str], None] = print,
    read_line: Callable[[], str] = input,
    wait_seconds: float = 600.0,
) -> str:
    """Run the installed-app flow once and save the credentials; returns who signed in.

    With ``open_browser``, a browser on this machine is sent to Google and back to a server on
    ``localhost:port`` (0: any free port). Without it (SSH sessions), the address is printed
    and the ``http://localhost:PORT/?code=...`` address the browser ends on (on any machine;
    the page need not load) is read back from ``read_line``.
    """
    config = client_config(account.client_secrets)
    auth = _google_auth(
        account,
        {"client_config_backend": "file", "client_config_file": str(account.client_secrets)},
    )
    auth.GetFlow()
    with _loopback(port) as server:
        auth.flow.redirect_uri = f"http://localhost:{server.server_address[1]}/"
        url = auth.GetAuthUrl()
        if FILE_SCOPE in scopes(account.copy_on_quota):
            say(
                "Asking for read-only access to Drive and for access to the files this tool "
                "creates (drive.file): copy_on_quota copies an over-quota file into your Drive, "
                "downloads the copy and deletes it."
            )
        if open_browser:
            say(f"Opening a browser at Google's sign-in page; if none opens, visit:\n\n    {url}\n")
            webbrowser.open(url, new=1, autoraise=True)
            deadline = time.monotonic() + wait_seconds
            while server.query is None:  # type: ignore[attr-defined]
                if time.monotonic() > deadline:
                    raise SignInError(
                        f"no answer from the browser within {wait_seconds:.0f} s; try again, or "
                        "use --no-browser"
                    )
                server.handle_request()
            code = _code(server.query)  # type: ignore[attr-defined]
        else:
            say(
                "Open this address in a browser on any machine and allow access:\n\n"
                f"    {url}\n\n"
                f"Google then sends the browser to http://localhost:{server.server_address[1]}/"
                "?code=...; that page may not load (the browser is on another machine). Copy "
                "the whole address from the address bar and paste it here."
            )
            try:
                code = code_from_redirect(read_line())
            except EOFError:
                raise SignInError("no address was pasted (standard input is closed)") from None
    try:
        auth.Authenticate(code)
    except Exception as exc:  # pydrive2's AuthenticationError around oauth2client's
        raise SignInError(f"Google refused the sign-in code: {exc}") from None
    credentials = auth.credentials
    if not credentials.refresh_token:
        raise SignInError(
            "Google sent no refresh token; remove this app's access at "
            "https://myaccount.google.com/permissions and sign in again"
        )
    if credentials.client_id != config["client_id"]:
        raise SignInError("the token endpoint answered for another client")
    write_private(account.credentials_file, credentials.to_json())
    auth.credentials.set_store(_storage_class()(account.credentials_file))
    return whoami(Connection(auth, drive_service(auth, account.api_endpoint), "you"))
