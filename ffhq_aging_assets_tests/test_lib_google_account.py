"""Signing in: the loopback flow, owner-only credentials, refresh, service accounts, no prompts."""

import ast
import dataclasses
import inspect
import json
import os
import stat
import threading
import urllib.request
from pathlib import Path

import pytest
from oauth2client.client import OOB_CALLBACK_URN

from ffhq_aging_assets.lib import google_account
from ffhq_aging_assets.lib.google_account import (
    FILE_SCOPE,
    READONLY_SCOPE,
    Account,
    SignInError,
    code_from_redirect,
    connect,
    sign_in,
    whoami,
)
from ffhq_aging_assets_tests.accounts import (
    auth_url_in,
    client_file,
    consent,
    service_key_file,
    signed_in,
)
from ffhq_aging_assets_tests.fake_google import DEFAULT_USER, FakeGoogle

PACKAGE = Path(google_account.__file__).parents[1]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_login_pasting_the_redirect_address_saves_owner_only_credentials(
    google: FakeGoogle, tmp_path: Path
) -> None:
    account = signed_in(google, tmp_path)
    asked = google.auth_requests[-1]
    assert asked["redirect_uri"].startswith("http://localhost:")
    assert "oob" not in json.dumps(google.auth_requests)
    assert asked["scope"] == READONLY_SCOPE and asked["access_type"] == "offline"
    saved = json.loads(account.credentials_file.read_text())
    assert saved["refresh_token"] and saved["client_id"] in account.client_secrets.read_text()
    assert mode(account.credentials_file) == 0o600
    assert mode(account.credentials_file.parent) == 0o700
    assert whoami(connect(account)) == f"FFHQ Researcher <{DEFAULT_USER}>"


def test_login_with_a_browser_takes_the_redirect_on_localhost(
    google: FakeGoogle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[str] = []

    def browser(url: str, **_: object) -> bool:
        # A browser is another process: it follows Google's redirect to the login's server.
        opened.append(url)
        threading.Thread(target=lambda: urllib.request.urlopen(url, timeout=10).read()).start()
        return True

    monkeypatch.setattr(google_account.webbrowser, "open", browser)
    account = Account(
        client_file(google, tmp_path),
        tmp_path / "creds.json",
        copy_on_quota=True,
        api_endpoint=google.api_endpoint,
    )
    said: list[str] = []
    who = sign_in(account, open_browser=True, say=said.append, wait_seconds=30)
    assert who == f"FFHQ Researcher <{DEFAULT_USER}>" and len(opened) == 1
    assert google.auth_requests[-1]["scope"].split() == [READONLY_SCOPE, FILE_SCOPE]
    assert any("drive.file" in line for line in said)
    saved = json.loads(account.credentials_file.read_text())["scopes"]
    assert sorted(saved) == sorted([READONLY_SCOPE, FILE_SCOPE])


def test_login_refusals_are_named(google: FakeGoogle, tmp_path: Path) -> None:
    account = Account(client_file(google, tmp_path), tmp_path / "creds.json")
    said: list[str] = []
    with pytest.raises(SignInError, match="paste the whole"):
        sign_in(account, open_browser=False, say=said.append, read_line=lambda: "4/0AbCdEf")
    google.deny_next_auth = True
    with pytest.raises(SignInError, match="did not grant access: access_denied"):
        sign_in(
            account,
            open_browser=False,
            say=said.append,
            read_line=lambda: consent(auth_url_in(said[-1])),
        )

    def closed() -> str:
        raise EOFError

    with pytest.raises(SignInError, match="standard input is closed"):
        sign_in(account, open_browser=False, say=said.append, read_line=closed)
    assert not account.credentials_file.exists()
    with pytest.raises(SignInError, match="does not exist"):
        sign_in(
            dataclasses.replace(account, client_secrets=tmp_path / "no.json"), open_browser=False
        )
    assert code_from_redirect("http://localhost:8080/?code=4/0Ab&scope=x") == "4/0Ab"


def test_a_run_without_a_sign_in_fails_at_once_saying_what_to_run(tmp_path: Path) -> None:
    account = Account(tmp_path / "client.json", tmp_path / "creds.json")
    with pytest.raises(SignInError, match="no saved Google sign-in .* run `ffhq-aging login"):
        connect(account)
    account.credentials_file.write_text("{not json")
    with pytest.raises(SignInError, match="is not a saved Google sign-in"):
        connect(account)


def test_expired_credentials_are_refreshed_and_saved_owner_only(
    google: FakeGoogle, tmp_path: Path
) -> None:
    account = signed_in(google, tmp_path)
    before = json.loads(account.credentials_file.read_text())["access_token"]
    google.expire_tokens()
    saved = json.loads(account.credentials_file.read_text())
    saved["token_expiry"] = "2020-01-01T00:00:00Z"
    account.credentials_file.write_text(json.dumps(saved))
    os.chmod(account.credentials_file, 0o644)
    connection = connect(account)
    assert google.grants["refresh_token"] == 1
    assert whoami(connection).endswith(f"<{DEFAULT_USER}>")
    after = json.loads(account.credentials_file.read_text())["access_token"]
    assert after != before and mode(account.credentials_file) == 0o600


def test_revoked_or_mismatched_or_narrow_sign_ins_ask_for_login(
    google: FakeGoogle, tmp_path: Path
) -> None:
    account = signed_in(google, tmp_path)
    other = dataclasses.replace(account, client_secrets=client_file(google, tmp_path, "other.json"))
    with pytest.raises(
        SignInError,
        match=r"OAuth client .*/other\.json: run `ffhq-aging login --client-secrets \S*other",
    ):
        connect(other)
    with pytest.raises(SignInError, match="lacks .*drive.file.*--copy-on-quota"):
        connect(dataclasses.replace(account, copy_on_quota=True))
    google.revoke_all()
    saved = json.loads(account.credentials_file.read_text())
    saved["token_expiry"] = "2020-01-01T00:00:00Z"
    account.credentials_file.write_text(json.dumps(saved))
    with pytest.raises(SignInError, match="invalid_grant.*run `ffhq-aging login"):
        connect(account)
    with pytest.raises(SignInError, match="revoked or expired"):
        connect(account)


def test_service_account_signs_in_without_a_person(google: FakeGoogle, tmp_path: Path) -> None:
    key = service_key_file(google, tmp_path)
    account = Account(
        tmp_path / "none.json",
        tmp_path / "none-creds.json",
        service_account=key,
        api_endpoint=google.api_endpoint,
    )
    email = json.loads(key.read_text())["client_email"]
    assert email in whoami(connect(account))
    assert google.grants["urn:ietf:params:oauth:grant-type:jwt-bearer"] == 1
    stranger = tmp_path / "stranger.json"
    foreign = json.loads(key.read_text())
    foreign["client_email"] = "someone@else.iam.gserviceaccount.com"
    stranger.write_text(json.dumps(foreign))
    with pytest.raises(SignInError, match="refused the key") as refused:
        connect(dataclasses.replace(account, service_account=stranger))
    assert "PRIVATE KEY" not in str(refused.value)
    not_a_key = tmp_path / "secrets.json"
    not_a_key.write_text(json.dumps(google.client_secrets_json()))
    with pytest.raises(SignInError, match="is not a service account key"):
        connect(dataclasses.replace(account, service_account=not_a_key))


def prompting_methods() -> set[str]:
    """pydrive2's ``GoogleAuth`` methods that wait on a person: they read the terminal, open a
    browser or wait for a redirect (its out-of-band flow among them)."""
    from pydrive2.auth import GoogleAuth

    signs = ("input(", "webbrowser", "handle_request", "OOB_CALLBACK_URN")
    return {
        name
        for name, method in inspect.getmembers(GoogleAuth, inspect.isfunction)
        if any(sign in inspect.getsource(method) for sign in signs)
    }


def test_no_step_code_can_reach_an_interactive_sign_in() -> None:
    """Only ``login`` calls ``sign_in``; nothing calls pydrive2's prompting flows or ``input``."""
    forbidden = prompting_methods()
    assert len(forbidden) >= 2, forbidden  # the terminal flow and the browser flow
    # GoogleDrive's file methods start a browser sign-in themselves when a token expires.
    forbidden.add("GoogleDrive")
    callers = set()
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute | ast.Name):
                name = node.attr if isinstance(node, ast.Attribute) else node.id
                assert name not in forbidden, path
                if name == "sign_in":
                    callers.add(path.name)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id != "input", path
        assert OOB_CALLBACK_URN not in path.read_text(), path
    assert callers == {"cli_login.py"}
