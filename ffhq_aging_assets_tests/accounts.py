"""Google accounts for tests: client files, a signed-in user and service-account keys, all aimed
at a :class:`FakeGoogle` on loopback."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from pathlib import Path

from ffhq_aging_assets.lib.google_account import Account, sign_in
from ffhq_aging_assets_tests.fake_google import FakeGoogle, throwaway_service_account_key


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def consent(auth_url: str) -> str:
    """What a person's browser does at Google's page: allow, and land on the redirect address.

    Returns that ``http://localhost:PORT/?code=...`` address without loading it, as a browser on
    another machine would.
    """
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        opener.open(auth_url, timeout=10)
    except urllib.error.HTTPError as exc:
        if exc.code in (301, 302, 303, 307):
            return exc.headers["Location"]
        raise
    raise AssertionError("Google's sign-in page did not redirect")


def auth_url_in(text: str) -> str:
    """The sign-in address printed in ``text``."""
    match = re.search(r"(http://127\.0\.0\.1:\d+/o/oauth2/auth\?\S+)", text)
    assert match, f"no sign-in address in {text!r}"
    return match.group(1)


def client_file(google: FakeGoogle, folder: Path, name: str = "client_secrets.json") -> Path:
    """A "Desktop app" OAuth client file registered with ``google``."""
    path = folder / name
    path.write_text(json.dumps(google.client_secrets_json()))
    return path


def service_key_file(google: FakeGoogle, folder: Path, name: str = "builder.json") -> Path:
    """A freshly generated service-account key, registered with ``google``."""
    path = folder / name
    path.write_text(json.dumps(throwaway_service_account_key(google)))
    return path


def signed_in(google: FakeGoogle, folder: Path, *, copy_on_quota: bool = False) -> Account:
    """An account signed in through ``login``'s paste-back flow, its credentials saved."""
    folder.mkdir(parents=True, exist_ok=True)
    account = Account(
        client_secrets=client_file(google, folder),
        credentials_file=folder / "config" / "drive-credentials.json",
        copy_on_quota=copy_on_quota,
        api_endpoint=google.api_endpoint,
        timeout=10,
    )
    said: list[str] = []
    sign_in(
        account,
        open_browser=False,
        say=said.append,
        read_line=lambda: consent(auth_url_in("\n".join(said))),
    )
    return account
