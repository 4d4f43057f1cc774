"""The fake Google OAuth and Drive v2 server, driven by the real client libraries."""

from __future__ import annotations

import hashlib
import http.client
import io
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httplib2
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError
from googleapiclient.http import MediaIoBaseDownload
from oauth2client import crypt
from oauth2client.client import (
    OOB_CALLBACK_URN,
    FlowExchangeError,
    HttpAccessTokenRefreshError,
    OAuth2Credentials,
    OAuth2WebServerFlow,
)
from oauth2client.service_account import ServiceAccountCredentials
from pydrive2.auth import GoogleAuth
from pydrive2.drive import GoogleDrive
from pydrive2.files import ApiRequestError

from ffhq_aging_assets_tests.fake_drive import FakeDrive
from ffhq_aging_assets_tests.fake_google import (
    DEFAULT_USER,
    DRIVE_FILE,
    DRIVE_READONLY,
    JWT_BEARER,
    Copy,
    Deletion,
    FakeGoogle,
    throwaway_service_account_key,
)

# Not a multiple of the chunk size, so the last ranged request is short.
DATA = bytes(range(256)) * 40 + b"tail"
FILE_ID = "1FaceFaceFaceFaceFaceFaceFace0001"
REDIRECT = "http://localhost:8765/"


pytestmark = pytest.mark.filterwarnings(
    # oauth2client signs service-account JWTs with pyOpenSSL's deprecated crypto.sign.
    "ignore:sign\\(\\) is deprecated:DeprecationWarning"
)


@pytest.fixture
def google() -> Iterator[FakeGoogle]:
    with FakeGoogle() as server:
        server.add(FILE_ID, DATA, "00001.png")
        yield server


@pytest.fixture
def over_drive(drive: FakeDrive) -> Iterator[FakeGoogle]:
    """The API in front of the anonymous fake's own files."""
    drive.add(FILE_ID, DATA, "00001.png")
    with FakeGoogle(drive) as server:
        yield server


class _KeepRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _open(request: str | urllib.request.Request) -> tuple[int, dict[str, str], bytes]:
    """Like a browser at the consent screen, but stopping at the redirect back to the app."""
    opener = urllib.request.build_opener(_KeepRedirect)
    try:
        with opener.open(request, timeout=5) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def _redirect_params(url: str) -> dict[str, str]:
    status, headers, _ = _open(url)
    assert status == 302
    location = headers["Location"]
    assert location.startswith(REDIRECT + "?")
    return {
        k: v[0] for k, v in urllib.parse.parse_qs(urllib.parse.urlparse(location).query).items()
    }


def _flow(google: FakeGoogle, scope: str, **client: Any) -> OAuth2WebServerFlow:
    installed = google.client_secrets_json(**client)["installed"]
    return OAuth2WebServerFlow(
        installed["client_id"],
        installed["client_secret"],
        scope,
        redirect_uri=REDIRECT,
        auth_uri=installed["auth_uri"],
        token_uri=installed["token_uri"],
    )


def _sign_in(google: FakeGoogle, scope: str = DRIVE_READONLY) -> OAuth2Credentials:
    flow = _flow(google, scope)
    return flow.step2_exchange(_redirect_params(flow.step1_get_authorize_url())["code"])


def _service(google: FakeGoogle, credentials: Any) -> Any:
    return build(
        "drive",
        "v2",
        http=credentials.authorize(httplib2.Http(timeout=10)),
        cache_discovery=False,
        static_discovery=True,
        client_options={"api_endpoint": google.api_endpoint},
    )


def _download(service: Any, file_id: str, chunksize: int = 4096) -> bytes:
    out = io.BytesIO()
    request = service.files().get_media(fileId=file_id)
    downloader = MediaIoBaseDownload(out, request, chunksize=chunksize)
    done = False
    while not done:
        _, done = downloader.next_chunk()
    return out.getvalue()


def _reason(exc: HttpError) -> str:
    return json.loads(exc.content)["error"]["errors"][0]["reason"]


def test_auth_code_flow_signs_in_and_downloads_in_ranges(
    over_drive: FakeGoogle, drive: FakeDrive
) -> None:
    google = over_drive
    flow = _flow(google, DRIVE_READONLY)
    params = _redirect_params(flow.step1_get_authorize_url())
    asked = google.auth_requests[-1]
    assert asked["access_type"] == "offline" and asked["response_type"] == "code"
    assert asked["redirect_uri"] == REDIRECT and params["scope"] == DRIVE_READONLY

    credentials = flow.step2_exchange(params["code"])
    assert credentials.access_token.startswith("ya29.")
    assert credentials.refresh_token.startswith("1//")
    assert credentials.token_response["expires_in"] == 3599
    service = _service(google, credentials)

    about = service.about().get().execute()
    assert about["name"] == "FFHQ Researcher"
    assert about["user"]["emailAddress"] == DEFAULT_USER
    assert about["user"]["isAuthenticatedUser"] is True

    meta = service.files().get(fileId=FILE_ID).execute()
    assert meta["md5Checksum"] == drive.files[FILE_ID].md5
    assert (meta["title"], meta["fileSize"], meta["mimeType"]) == (
        "00001.png",
        str(len(DATA)),
        "image/png",
    )
    assert meta["webContentLink"].startswith(drive.url(FILE_ID))
    assert service.files().get(fileId=FILE_ID, fields="id,fileSize").execute() == {
        "id": FILE_ID,
        "fileSize": str(len(DATA)),
    }

    assert _download(service, FILE_ID) == DATA
    assert google.media_requests(FILE_ID) == 3
    media = [r for r in google.log if r.file_id == FILE_ID and r.status == 206]
    assert [r.who for r in media] == [DEFAULT_USER] * 3
    assert google.grants == Counter({"authorization_code": 1})

    with pytest.raises(FlowExchangeError, match="invalid_grant"):
        flow.step2_exchange(params["code"])
    with pytest.raises(FlowExchangeError, match="invalid_grantMalformed auth code"):
        flow.step2_exchange("4/not-a-code")


def test_sign_in_refusals(google: FakeGoogle) -> None:
    google.deny_next_auth = True
    flow = _flow(google, DRIVE_READONLY)
    denied = _redirect_params(flow.step1_get_authorize_url())
    assert denied == {"error": "access_denied"}
    with pytest.raises(FlowExchangeError, match="access_denied"):
        flow.step2_exchange(denied)

    unknown = _flow(google, DRIVE_READONLY, register=False)
    status, _, page = _open(unknown.step1_get_authorize_url())
    assert status == 401 and b"invalid_client" in page

    oob = _flow(google, DRIVE_READONLY)
    oob.redirect_uri = OOB_CALLBACK_URN
    assert _open(oob.step1_get_authorize_url())[0] == 400

    wrong_secret = _flow(google, DRIVE_READONLY)
    code = _redirect_params(wrong_secret.step1_get_authorize_url())["code"]
    wrong_secret.client_secret = "GOCSPX-wrong"
    with pytest.raises(FlowExchangeError, match="invalid_clientUnauthorized"):
        wrong_secret.step2_exchange(code)

    moved = _flow(google, DRIVE_READONLY)
    code = _redirect_params(moved.step1_get_authorize_url())["code"]
    moved.redirect_uri = "http://localhost:9999/"
    with pytest.raises(FlowExchangeError, match="redirect_uri_mismatch"):
        moved.step2_exchange(code)


def test_expired_tokens_refresh_until_revoked(google: FakeGoogle) -> None:
    credentials = _sign_in(google)
    service = _service(google, credentials)
    service.about().get().execute()
    first = credentials.access_token

    google.expire_tokens()
    assert service.about().get().execute()["user"]["emailAddress"] == DEFAULT_USER
    assert credentials.access_token != first
    assert google.grants["refresh_token"] == 1
    about = [r.status for r in google.log if r.path.endswith("/about")]
    assert about == [200, 401, 200]

    # Mid-download expiry: the next ranged request refreshes and the download carries on.
    out = io.BytesIO()
    downloader = MediaIoBaseDownload(out, service.files().get_media(fileId=FILE_ID), 4096)
    downloader.next_chunk()
    google.expire_tokens()
    done = False
    while not done:
        _, done = downloader.next_chunk()
    assert out.getvalue() == DATA and google.grants["refresh_token"] == 2

    google.revoke_all()
    google.expire_tokens()
    with pytest.raises(HttpAccessTokenRefreshError, match="invalid_grant") as caught:
        service.about().get().execute()
    assert caught.value.status == 400
    assert str(caught.value) == "invalid_grant: Token has been expired or revoked."
    assert credentials.invalid


def test_service_account_key_authorises_downloads(google: FakeGoogle) -> None:
    key = throwaway_service_account_key(google)
    assert key["type"] == "service_account" and key["token_uri"] == google.token_uri
    assert key["private_key"].startswith("-----BEGIN PRIVATE KEY-----")
    assert key["universe_domain"] == "googleapis.com"
    credentials = ServiceAccountCredentials.from_json_keyfile_dict(key, scopes=[DRIVE_READONLY])
    service = _service(google, credentials)

    about = service.about().get().execute()
    assert about["user"]["emailAddress"] == key["client_email"]
    assert credentials.access_token.startswith("ya29.c.")
    assert _download(service, FILE_ID, chunksize=5000) == DATA
    google.expire_tokens()
    assert _download(service, FILE_ID, chunksize=len(DATA)) == DATA
    assert google.grants == Counter({JWT_BEARER: 2})

    status, _, body = _open(key["client_x509_cert_url"])
    assert status == 200
    assert json.loads(body)[key["private_key_id"]].startswith("-----BEGIN CERTIFICATE-----")


def test_service_account_keys_the_server_does_not_know_are_refused(google: FakeGoogle) -> None:
    unregistered = throwaway_service_account_key(google, register=False)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = throwaway_service_account_key(google) | {
        "private_key": other.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
    }
    for key in (unregistered, forged):
        credentials = ServiceAccountCredentials.from_json_keyfile_dict(key, scopes=[DRIVE_READONLY])
        with pytest.raises(HttpAccessTokenRefreshError, match="Invalid JWT Signature"):
            _service(google, credentials).about().get().execute()
    assert google.grants[JWT_BEARER] == 0


@pytest.mark.parametrize(
    ("claims", "error"),
    [
        ({"aud": "https://oauth2.googleapis.com/token"}, "Failed audience check"),
        ({"iat": 1_000_000_000, "exp": 1_000_003_600}, "short-lived token"),
        ({"scope": ""}, "invalid_scope"),
    ],
)
def test_jwt_claims_are_checked(google: FakeGoogle, claims: dict[str, Any], error: str) -> None:
    key = throwaway_service_account_key(google)
    now = int(time.time())
    payload = {
        "iss": key["client_email"],
        "scope": DRIVE_READONLY,
        "aud": google.token_uri,
        "iat": now,
        "exp": now + 3600,
    } | claims
    signer = crypt.Signer.from_string(key["private_key"])
    assertion = crypt.make_signed_jwt(signer, payload, key_id=key["private_key_id"])
    form = urllib.parse.urlencode({"grant_type": JWT_BEARER, "assertion": assertion.decode()})
    request = urllib.request.Request(google.token_uri, data=form.encode(), method="POST")
    status, headers, body = _open(request)
    assert status == 400 and headers["Content-Type"] == "application/json; charset=utf-8"
    assert error in json.dumps(json.loads(body))


@pytest.mark.parametrize(
    ("fault", "status", "reason", "domain"),
    [
        ("userRateLimit", 403, "userRateLimitExceeded", "usageLimits"),
        ("rateLimit", 403, "rateLimitExceeded", "usageLimits"),
        ("429", 429, "rateLimitExceeded", "usageLimits"),
        ("quota", 403, "downloadQuotaExceeded", "usageLimits"),
        ("cannotDownload", 403, "cannotDownloadFile", "global"),
        ("notFound", 404, "notFound", "global"),
        ("500", 500, "backendError", "global"),
        ("503", 503, "backendError", "global"),
    ],
)
def test_each_fault_is_a_google_error(
    google: FakeGoogle, fault: str, status: int, reason: str, domain: str
) -> None:
    service = _service(google, _sign_in(google))
    google.fail(FILE_ID, fault)
    with pytest.raises(HttpError) as caught:
        service.files().get_media(fileId=FILE_ID).execute()
    exc = caught.value
    assert exc.status_code == status and _reason(exc) == reason
    assert exc.error_details[0]["domain"] == domain
    assert exc.resp["content-type"] == "application/json; charset=UTF-8"
    assert "retry-after" not in exc.resp
    assert service.files().get_media(fileId=FILE_ID).execute() == DATA


def test_retry_after_reaches_the_client(google: FakeGoogle) -> None:
    service = _service(google, _sign_in(google))
    google.fail(FILE_ID, "rateLimit:retry-after=2", "429:retry-after=7")
    with pytest.raises(HttpError) as caught:
        service.files().get_media(fileId=FILE_ID).execute()
    assert caught.value.resp["retry-after"] == "2" and caught.value.reason == "Rate Limit Exceeded"
    with pytest.raises(HttpError) as caught:
        _download(service, FILE_ID)
    assert caught.value.resp.status == 429 and caught.value.resp["retry-after"] == "7"
    with pytest.raises(ValueError, match="unknown fault"):
        google.fail(FILE_ID, "rateLimt")
    with pytest.raises(ValueError, match="retry-after"):
        google.fail(FILE_ID, "corrupt:retry-after=1")
    with pytest.raises(KeyError):
        google.fail("no-such-file", "500")


def test_truncated_and_corrupt_media(google: FakeGoogle) -> None:
    service = _service(google, _sign_in(google))
    google.fail(FILE_ID, "truncate", "corrupt", "ok")
    with pytest.raises(http.client.IncompleteRead):
        service.files().get_media(fileId=FILE_ID).execute()
    corrupt = service.files().get_media(fileId=FILE_ID).execute()
    assert len(corrupt) == len(DATA)
    assert sum(a != b for a, b in zip(corrupt, DATA, strict=True)) == 1
    assert service.files().get_media(fileId=FILE_ID).execute() == DATA

    # A ranged request cut short: MediaIoBaseDownload keeps its place, so asking again resumes.
    google.fail(FILE_ID, "ok", "truncate")
    out = io.BytesIO()
    downloader = MediaIoBaseDownload(out, service.files().get_media(fileId=FILE_ID), 4096)
    downloader.next_chunk()
    with pytest.raises(http.client.IncompleteRead):
        downloader.next_chunk()
    done = False
    while not done:
        _, done = downloader.next_chunk()
    assert out.getvalue() == DATA


def test_copy_sidesteps_the_quota_and_delete_cleans_up(google: FakeGoogle) -> None:
    service = _service(google, _sign_in(google, f"{DRIVE_READONLY} {DRIVE_FILE}"))
    google.fail(FILE_ID, "quota", "quota")
    with pytest.raises(HttpError) as caught:
        service.files().get_media(fileId=FILE_ID).execute()
    assert _reason(caught.value) == "downloadQuotaExceeded"

    copy = service.files().copy(fileId=FILE_ID, body={"title": "mine.png"}).execute()
    assert copy["title"] == "mine.png" and copy["md5Checksum"] == hashlib.md5(DATA).hexdigest()
    assert copy["userPermission"]["role"] == "owner"
    assert _download(service, copy["id"]) == DATA
    assert google.copies == [Copy(FILE_ID, copy["id"], DEFAULT_USER)]
    with pytest.raises(HttpError, match="download quota"):
        service.files().get_media(fileId=FILE_ID).execute()

    with pytest.raises(HttpError) as caught:
        service.files().delete(fileId=FILE_ID).execute()
    assert caught.value.status_code == 403
    assert _reason(caught.value) == "insufficientFilePermissions"
    # Drive v2's delete declares no response, so googleapiclient answers its 204 with "".
    assert service.files().delete(fileId=copy["id"]).execute() == ""
    assert google.deleted == [Deletion(copy["id"], DEFAULT_USER)]
    assert [r.status for r in google.log if r.method == "DELETE"] == [403, 204]
    with pytest.raises(HttpError) as caught:
        service.files().get(fileId=copy["id"]).execute()
    assert caught.value.status_code == 404


def test_scopes_decide_what_a_token_may_do(google: FakeGoogle) -> None:
    readonly = _service(google, _sign_in(google, DRIVE_READONLY))
    with pytest.raises(HttpError) as caught:
        readonly.files().copy(fileId=FILE_ID, body={}).execute()
    exc = caught.value
    assert exc.status_code == 403 and _reason(exc) == "insufficientPermissions"
    assert exc.reason == "Insufficient Permission: Request had insufficient authentication scopes."
    assert 'error="insufficient_scope"' in exc.resp["www-authenticate"]
    assert google.copies == []

    file_only = _service(google, _sign_in(google, DRIVE_FILE))
    with pytest.raises(HttpError) as caught:
        file_only.files().get_media(fileId=FILE_ID).execute()
    assert _reason(caught.value) == "insufficientPermissions"
    copy = file_only.files().copy(fileId=FILE_ID, body={}).execute()
    assert copy["title"] == "Copy of 00001.png"
    assert file_only.files().get_media(fileId=copy["id"]).execute() == DATA

    google.add_user("other@example.com", "Someone Else")
    google.current_user = "other@example.com"
    other = _service(google, _sign_in(google, DRIVE_READONLY))
    assert other.about().get().execute()["name"] == "Someone Else"
    with pytest.raises(HttpError) as caught:
        other.files().get(fileId=copy["id"]).execute()
    assert caught.value.status_code == 404


def test_bad_credentials_and_unknown_files_answer_like_google(google: FakeGoogle) -> None:
    url = f"{google.api_endpoint}files/{FILE_ID}?alt=media"
    bad = urllib.request.Request(url, headers={"Authorization": "Bearer ya29.made-up"})
    status, headers, body = _open(bad)
    assert status == 401
    assert headers["WWW-Authenticate"] == (
        'Bearer realm="https://accounts.google.com/", error="invalid_token"'
    )
    error = json.loads(body)["error"]
    assert error["status"] == "UNAUTHENTICATED" and error["errors"] == [
        {
            "message": "Invalid Credentials",
            "domain": "global",
            "reason": "authError",
            "location": "Authorization",
            "locationType": "header",
        }
    ]
    assert error["message"].startswith("Request had invalid authentication credentials.")
    status, _, body = _open(urllib.request.Request(url))
    assert status == 401 and json.loads(body)["error"]["errors"][0]["reason"] == "required"

    service = _service(google, _sign_in(google))
    with pytest.raises(HttpError) as caught:
        service.files().get_media(fileId="0Nope").execute()
    assert json.loads(caught.value.content) == {
        "error": {
            "code": 404,
            "message": "File not found: 0Nope.",
            "errors": [
                {
                    "message": "File not found: 0Nope.",
                    "domain": "global",
                    "reason": "notFound",
                    "location": "file",
                    "locationType": "other",
                }
            ],
        }
    }


def test_own_files_and_overlapping_downloads(google: FakeGoogle) -> None:
    google.add("1Own", b"x" * 3000, "own.json")
    credentials = _sign_in(google)
    google.delay_seconds = 0.3
    results: dict[int, bytes] = {}

    def fetch(slot: int) -> None:
        results[slot] = _download(_service(google, credentials), "1Own")

    threads = [threading.Thread(target=fetch, args=(slot,)) for slot in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert results == {0: b"x" * 3000, 1: b"x" * 3000}
    assert len(google.peers_for("1Own")) == 2
    # Served one after the other, the second would arrive only once the first's delay was over.
    arrivals = sorted(r.at for r in google.log if r.file_id == "1Own")
    assert arrivals[1] - arrivals[0] < 0.3


def test_pydrive2_with_its_service_swapped_for_one_aimed_here(
    google: FakeGoogle, tmp_path: Path
) -> None:
    key = throwaway_service_account_key(google)
    settings = {
        "client_config_backend": "service",
        "service_config": {"client_json_dict": key},
        "oauth_scope": [DRIVE_READONLY, DRIVE_FILE],
    }
    gauth = GoogleAuth(settings=settings)
    gauth.ServiceAuth()
    # pydrive2 builds its service for www.googleapis.com; only the endpoint has to change.
    gauth.service = _service(google, gauth.credentials)
    pydrive = GoogleDrive(gauth)

    remote = pydrive.CreateFile({"id": FILE_ID})
    remote.FetchMetadata(fields="title,md5Checksum,fileSize")
    assert remote["fileSize"] == str(len(DATA))
    target = tmp_path / "00001.png"
    remote.GetContentFile(str(target), chunksize=4096)
    assert target.read_bytes() == DATA

    google.fail(FILE_ID, "quota")
    with pytest.raises(ApiRequestError) as caught:
        remote.GetContentFile(str(target))
    assert caught.value.GetField("reason") == "downloadQuotaExceeded"
    copy = remote.Copy(new_title=None)
    assert copy["title"] == "Copy of 00001.png"
    copy.GetContentFile(str(target))
    assert target.read_bytes() == DATA
    copy.Delete()
    assert google.deleted == [Deletion(copy["id"], key["client_email"])]
