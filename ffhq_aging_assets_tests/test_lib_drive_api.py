"""Drive API downloads with an account, through the real client libraries against FakeGoogle."""

from __future__ import annotations

import dataclasses
import email.utils
import hashlib
import json
import random
import stat
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httplib2
import pytest
from googleapiclient.errors import HttpError

from ffhq_aging_assets.lib.download import (
    DownloadError,
    FileSpec,
    QuotaExceededError,
    RetryPolicy,
)
from ffhq_aging_assets.lib.drive_api import (
    BROKEN,
    COPIED,
    QUOTA,
    QUOTA_ADVICE,
    RATE_LIMITED,
    REFUSED,
    SERVER_ERROR,
    UNAVAILABLE,
    WRONG_BYTES,
    DriveAccountSource,
    DriveQuotaError,
    RateGate,
    UnavailableError,
    classify,
    parse_retry_after,
)
from ffhq_aging_assets.lib.files import leftover_temp_files
from ffhq_aging_assets.lib.google_account import Account, SignInError
from ffhq_aging_assets.lib.sources import DriveHttpSource
from ffhq_aging_assets_tests.accounts import service_key_file, signed_in
from ffhq_aging_assets_tests.fake_drive import FakeDrive
from ffhq_aging_assets_tests.fake_google import DEFAULT_USER, FakeGoogle

pytestmark = pytest.mark.filterwarnings(
    # oauth2client signs service-account JWTs with pyOpenSSL's deprecated crypto.sign.
    "ignore:sign\\(\\) is deprecated:DeprecationWarning"
)

POLICY = RetryPolicy(attempts=3, backoff=0.01, max_backoff=0.02)
SERVICE_EMAIL = "builder@ffhq-test.iam.gserviceaccount.com"
SERVED: dict[str, bytes] = {}  # file id -> the bytes served (ids and bytes are fixed per n)


def file_id(n: int) -> str:
    """A Drive-looking id (``[0-9A-Za-z_-]{10,}``)."""
    return f"1DriveApiTestFile{n:04d}"


def data_of(n: int, size: int = 20_000) -> bytes:
    return random.Random(n).randbytes(size)


def serve(google: FakeGoogle, n: int, size: int = 20_000) -> FileSpec:
    """Serve a file of distinct bytes as ``file_id(n)``; its spec."""
    data = data_of(n, size)
    SERVED[file_id(n)] = data
    fid = google.add(file_id(n), data, f"{n:05d}.png")
    return FileSpec(
        f"https://drive.google.com/uc?id={fid}", f"{n:05d}.png", size, hashlib.md5(data).hexdigest()
    )


def id_of(spec: FileSpec) -> str:
    return spec.url.rpartition("=")[2]


def source(
    account: Account, *, gate: RateGate | None = None, rate_limit_attempts: int = 8
) -> DriveAccountSource:
    return DriveAccountSource(
        account,
        POLICY,
        DriveHttpSource(POLICY),
        gate=gate,
        rate_limit_attempts=rate_limit_attempts,
    )


def media_log(google: FakeGoogle) -> list:
    """The log's Drive file GETs (this source only ever asks for media)."""
    return [r for r in google.log if r.method == "GET" and r.file_id is not None]


@pytest.fixture
def account(google: FakeGoogle, tmp_path: Path) -> Account:
    (tmp_path / "user").mkdir()
    return signed_in(google, tmp_path / "user")


# 1. Downloads by id, reuse, fallback.


def test_downloads_by_id_verified_into_dest(google: FakeGoogle, account: Account, tmp_path: Path):
    spec = serve(google, 1)
    dest = tmp_path / "out" / "00001.png"
    src = source(account)

    got = src.fetch(spec, dest)

    assert (got.path, got.owned, got.fetched) == (dest, True, True)
    assert dest.read_bytes() == SERVED[id_of(spec)]
    assert google.media_requests(id_of(spec)) == 1
    assert leftover_temp_files(dest.parent) == []
    assert sum(src.counts.values()) == 0


def test_verified_dest_is_reused_without_any_request(
    google: FakeGoogle, account: Account, tmp_path: Path
):
    spec = serve(google, 2)
    dest = tmp_path / "00002.png"
    src = source(account)
    src.fetch(spec, dest)
    requests = len(google.log)

    again = src.fetch(spec, dest)

    assert (again.path, again.fetched) == (dest, False)
    assert len(google.log) == requests
    # Not even a sign-in: an account that could not sign in reuses the file too.
    nobody = dataclasses.replace(account, credentials_file=tmp_path / "missing.json")
    assert source(nobody).fetch(spec, dest).fetched is False
    assert len(google.log) == requests


def test_wrong_bytes_never_reach_dest(google: FakeGoogle, account: Account, tmp_path: Path):
    """A download goes through a temporary file: a failed one leaves dest as it was."""
    spec = serve(google, 3)
    dest = tmp_path / "00003.png"
    dest.write_bytes(b"stale")
    google.fail(id_of(spec), *["corrupt"] * POLICY.attempts)

    with pytest.raises(DownloadError, match="00003.png"):
        source(account).fetch(spec, dest)

    assert dest.read_bytes() == b"stale"
    assert leftover_temp_files(tmp_path) == []
    source(account).fetch(spec, dest)
    assert dest.read_bytes() == SERVED[id_of(spec)]


def test_url_without_drive_id_goes_to_fallback(
    google: FakeGoogle, drive: FakeDrive, account: Account, tmp_path: Path
):
    data = b"anonymous bytes" * 100
    url = drive.add("short", data)  # an id too short to be a Drive id
    spec = FileSpec(url, "short.bin", len(data), hashlib.md5(data).hexdigest())
    dest = tmp_path / "short.bin"

    got = source(account).fetch(spec, dest)

    assert got.fetched and dest.read_bytes() == data
    assert drive.body_requests["short"] == 1
    assert media_log(google) == []


# 2. One client per thread.


def test_each_thread_has_its_own_connection(google: FakeGoogle, account: Account, tmp_path: Path):
    threads, per_thread = 5, 4
    specs = [serve(google, 100 + i) for i in range(threads * per_thread)]
    src = source(account)
    google.delay_seconds = 0.2
    fetched_by: dict[str, int] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def work(mine: list[FileSpec]) -> None:
        try:
            start.wait()
            for spec in mine:
                src.fetch(spec, tmp_path / spec.name)
                fetched_by[id_of(spec)] = threading.get_ident()
        except BaseException as exc:  # reported below
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(specs[i::threads],)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()

    assert errors == []
    for spec in specs:
        assert (tmp_path / spec.name).read_bytes() == SERVED[id_of(spec)]
    ports: defaultdict[int, set[int]] = defaultdict(set)
    for fid, ident in fetched_by.items():
        ports[ident] |= google.peers_for(fid)
    assert len(ports) == threads
    for ident, mine in ports.items():
        others = set().union(*(p for i, p in ports.items() if i != ident))
        assert not mine & others
        # Keep-alive: each thread asked for all its files over one connection.
        assert len(mine) == 1
    # The requests did overlap: some media request arrived while another was being answered.
    arrivals = sorted(r.at for r in media_log(google))
    assert any(b - a < google.delay_seconds for a, b in zip(arrivals, arrivals[1:], strict=False))


# 3. Rate limits.


class RecordingGate(RateGate):
    """A RateGate that notes when each thread came to it and when it was slowed down."""

    def __init__(self, base: float = 0.01) -> None:
        super().__init__(base=base, cap=1.0, seed=7)
        self.passes: defaultdict[int, list[float]] = defaultdict(list)
        self.slowed: list[float] = []
        self._notes = threading.Lock()

    def wait(self) -> float:
        # Noted before the gate looks at its resume time, so a note made after ``slowed`` means
        # the gate saw the slow-down.
        with self._notes:
            self.passes[threading.get_ident()].append(time.monotonic())
        return super().wait()

    def slow_down(self, retry_after: float | None) -> float:
        pause = super().slow_down(retry_after)
        with self._notes:
            self.slowed.append(time.monotonic())
        return pause


def test_retry_after_holds_every_thread(google: FakeGoogle, account: Account, tmp_path: Path):
    threads, per_thread = 4, 4
    specs = [serve(google, 200 + i) for i in range(threads * per_thread)]
    limited = specs[0]
    google.fail(id_of(limited), "rateLimit:retry-after=1")
    gate = RecordingGate()
    src = source(account, gate=gate)
    google.delay_seconds = 0.2
    fetched_by: dict[str, int] = {}

    def fetch(mine: list[FileSpec]) -> None:
        for spec in mine:
            src.fetch(spec, tmp_path / spec.name)
            fetched_by[id_of(spec)] = threading.get_ident()

    with ThreadPoolExecutor(threads) as pool:
        for done in [pool.submit(fetch, specs[i::threads]) for i in range(threads)]:
            done.result()

    for spec in specs:
        assert (tmp_path / spec.name).read_bytes() == SERVED[id_of(spec)]
    assert src.counts[RATE_LIMITED] == 1
    assert google.media_requests(id_of(limited)) == 2
    refused = [r for r in media_log(google) if r.status == 403]
    assert [r.file_id for r in refused] == [id_of(limited)]
    arrival = refused[0].at
    (slowed,) = gate.slowed
    # Every request that passed the gate after the slow-down waited out the Retry-After; those
    # already past the gate when the answer came could not know and are exempt.
    held = 0
    for record in media_log(google):
        ident = fetched_by[record.file_id]
        passed = max(t for t in gate.passes[ident] if t <= record.at)
        if passed >= slowed:
            assert record.at >= arrival + 1.0, record
            held += ident != fetched_by[id_of(limited)]
    assert held >= threads - 1  # the other threads were held, not only the limited one


@pytest.mark.parametrize("fault", ["userRateLimit", "429"])
def test_rate_limit_without_retry_after_backs_off(
    google: FakeGoogle, account: Account, tmp_path: Path, fault: str
):
    spec = serve(google, 300)
    google.fail(id_of(spec), fault, fault)
    src = source(account, gate=RateGate(base=0.05, cap=1.0, seed=1))

    assert src.fetch(spec, tmp_path / spec.name).fetched

    assert src.counts[RATE_LIMITED] == 2
    assert (tmp_path / spec.name).read_bytes() == SERVED[id_of(spec)]
    first, second, third = (r.at for r in media_log(google))
    assert second - first >= 0.05  # base
    assert third - second >= 0.10  # doubled


def test_rate_limited_too_often_fails_naming_the_file(
    google: FakeGoogle, account: Account, tmp_path: Path
):
    ok, bad = serve(google, 301), serve(google, 302)
    google.fail(id_of(ok), "rateLimit", "429")
    google.fail(id_of(bad), "userRateLimit", "rateLimit", "429")
    src = source(account, rate_limit_attempts=3, gate=RateGate(base=0.01, cap=0.05))

    assert src.fetch(ok, tmp_path / ok.name).fetched
    with pytest.raises(DownloadError, match=f"00302.png.*{id_of(bad)}.*rate limited") as caught:
        src.fetch(bad, tmp_path / bad.name)

    assert not isinstance(caught.value, QuotaExceededError | UnavailableError)
    assert google.media_requests(id_of(ok)) == 3
    assert google.media_requests(id_of(bad)) == 3
    assert src.counts[RATE_LIMITED] == 5
    assert not (tmp_path / bad.name).exists()


def pauses(gate: RateGate, n: int, retry_after: float | None = None) -> list[float]:
    return [gate.slow_down(retry_after) for _ in range(n)]


def test_rate_gate_jitter_lies_within_one_base():
    firsts = [RateGate(base=1.0, cap=64.0, seed=s).slow_down(None) for s in range(20)]
    for pause in firsts:
        assert 1.0 - 0.05 <= pause <= 2.0
    assert len({round(p, 3) for p in firsts}) > 10  # jittered, not one value


def test_rate_gate_doubles_up_to_its_cap():
    gate = RateGate(base=1.0, cap=8.0, seed=3)
    for level, pause in enumerate(pauses(gate, 6)):
        low = min(8.0, 2.0**level)
        assert low - 0.05 <= pause <= low + 1.0, (level, pause)


def test_rate_gate_retry_after_wins():
    gate = RateGate(base=0.01, cap=1.0, seed=2)
    assert 30.0 - 0.05 <= gate.slow_down(30.0) <= 30.0
    # A Retry-After shorter than the backoff does not shorten it.
    other = RateGate(base=1.0, cap=8.0, seed=2)
    assert other.slow_down(0.0) >= 1.0 - 0.05


def test_rate_gate_wait_sleeps_until_the_resume_time():
    gate = RateGate(base=0.01, cap=1.0, seed=4)
    assert gate.wait() == 0.0
    start = time.monotonic()
    gate.slow_down(0.2)
    assert gate.wait() > 0
    assert time.monotonic() - start >= 0.2
    assert gate.wait() == 0.0


def test_rate_gate_recovered_lowers_the_level():
    base = 0.01
    gate = RateGate(base=base, cap=1.0, seed=5)
    pauses(gate, 3)  # level 3
    gate.wait()
    gate.recovered()  # level 2
    assert 4 * base - 0.005 <= gate.slow_down(None) <= 5 * base
    gate.wait()
    for _ in range(5):  # never below zero
        gate.recovered()
    assert base - 0.005 <= gate.slow_down(None) <= 2 * base


def test_parse_retry_after():
    now = time.time()
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(" 120 ") == 120.0
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after(date, now=now) == pytest.approx(30.0, abs=1.0)
    past = email.utils.formatdate(now - 30, usegmt=True)
    assert parse_retry_after(past, now=now) == 0.0
    for junk in (None, "", "soon", "-5", "1.5s", "²", "Wed, 99 Foo 2024"):
        assert parse_retry_after(junk) is None, junk


# 4. The download quota.


def test_quota_fails_the_file_with_advice_and_not_the_batch(
    google: FakeGoogle, account: Account, tmp_path: Path
):
    specs = [serve(google, 400 + i) for i in range(6)]
    over = specs[2]
    google.fail(id_of(over), "quota")
    src = source(account)
    google.delay_seconds = 0.05

    with ThreadPoolExecutor(3) as pool:
        futures = {id_of(s): pool.submit(src.fetch, s, tmp_path / s.name) for s in specs}
    with pytest.raises(DriveQuotaError) as caught:
        futures[id_of(over)].result()

    message = str(caught.value)
    assert "00402.png" in message and id_of(over) in message and QUOTA_ADVICE in message
    assert isinstance(caught.value, QuotaExceededError)
    assert google.media_requests(id_of(over)) == 1
    assert src.counts[QUOTA] == 1
    assert not (tmp_path / over.name).exists()
    for spec in specs:
        if spec is not over:
            assert futures[id_of(spec)].result().fetched
            assert (tmp_path / spec.name).read_bytes() == SERVED[id_of(spec)]


# 5. Files that cannot be had.


@pytest.mark.parametrize("fault", ["notFound", "cannotDownload"])
def test_unavailable_is_not_retried(
    google: FakeGoogle, account: Account, tmp_path: Path, fault: str
):
    spec = serve(google, 500)
    google.fail(id_of(spec), fault)
    src = source(account)

    with pytest.raises(UnavailableError, match=f"00500.png.*{id_of(spec)}"):
        src.fetch(spec, tmp_path / spec.name)

    assert google.media_requests(id_of(spec)) == 1
    assert src.counts[UNAVAILABLE] == 1
    assert sum(src.counts.values()) == 1


def test_a_file_missing_from_drive_is_unavailable(
    google: FakeGoogle, account: Account, tmp_path: Path
):
    spec = FileSpec("https://drive.google.com/uc?id=1NoSuchFileAnywhere", "gone.png", 1, None)
    with pytest.raises(UnavailableError, match="gone.png.*1NoSuchFileAnywhere"):
        source(account).fetch(spec, tmp_path / "gone.png")
    assert google.media_requests("1NoSuchFileAnywhere") == 1


# 6. Transient failures.


@pytest.mark.parametrize(
    ("fault", "cause"),
    [("500", SERVER_ERROR), ("503", SERVER_ERROR), ("truncate", BROKEN), ("corrupt", WRONG_BYTES)],
)
def test_transient_failures_are_retried(
    google: FakeGoogle, account: Account, tmp_path: Path, fault: str, cause: str
):
    spec = serve(google, 600)
    google.fail(id_of(spec), fault)
    src = source(account)

    assert src.fetch(spec, tmp_path / spec.name).fetched

    assert (tmp_path / spec.name).read_bytes() == SERVED[id_of(spec)]
    assert google.media_requests(id_of(spec)) == 2
    assert src.counts == {cause: 1}


@pytest.mark.parametrize(
    ("fault", "cause"), [("500", SERVER_ERROR), ("truncate", BROKEN), ("corrupt", WRONG_BYTES)]
)
def test_a_file_failing_every_attempt_gives_up(
    google: FakeGoogle, account: Account, tmp_path: Path, fault: str, cause: str
):
    spec = serve(google, 601)
    google.fail(id_of(spec), *[fault] * (POLICY.attempts + 1))
    src = source(account)

    with pytest.raises(DownloadError, match=f"00601.png.*after {POLICY.attempts} attempts"):
        src.fetch(spec, tmp_path / spec.name)

    assert google.media_requests(id_of(spec)) == POLICY.attempts
    assert src.counts == {cause: POLICY.attempts}
    assert not (tmp_path / spec.name).exists()
    assert leftover_temp_files(tmp_path) == []


# 7-8. The sign-in during a step.


def test_an_expired_token_is_refreshed_once_and_saved(
    google: FakeGoogle, account: Account, tmp_path: Path
):
    first, second, third = (serve(google, 700 + i) for i in range(3))
    src = source(account)
    src.fetch(first, tmp_path / first.name)
    old_token = json.loads(account.credentials_file.read_text())["access_token"]
    refreshed = google.grants["refresh_token"]

    google.expire_tokens()
    assert src.fetch(second, tmp_path / second.name).fetched
    assert src.fetch(third, tmp_path / third.name).fetched

    assert google.grants["refresh_token"] == refreshed + 1
    assert (tmp_path / second.name).read_bytes() == SERVED[id_of(second)]
    saved = json.loads(account.credentials_file.read_text())
    assert saved["access_token"] != old_token
    assert google.access_tokens[saved["access_token"]].valid
    assert stat.S_IMODE(account.credentials_file.stat().st_mode) == 0o600


def test_a_revoked_sign_in_fails_the_step_and_is_remembered(
    google: FakeGoogle, account: Account, tmp_path: Path
):
    first, second, third = (serve(google, 800 + i) for i in range(3))
    src = source(account)
    src.fetch(first, tmp_path / first.name)

    google.revoke_all()
    google.expire_tokens()
    with pytest.raises(SignInError, match="ffhq-aging login") as caught:
        src.fetch(second, tmp_path / second.name)
    assert not isinstance(caught.value, DownloadError)
    requests = len(google.log)

    with pytest.raises(SignInError, match="ffhq-aging login"):
        src.fetch(third, tmp_path / third.name)
    # From another thread too (it has no client of its own yet).
    with ThreadPoolExecutor(1) as pool, pytest.raises(SignInError, match="ffhq-aging login"):
        pool.submit(src.fetch, third, tmp_path / third.name).result()

    assert google.media_requests(id_of(third)) == 0
    assert len(google.log) == requests
    assert not (tmp_path / second.name).exists()


# 9. Copying past the quota.


@pytest.fixture
def copier(google: FakeGoogle, tmp_path: Path) -> Account:
    (tmp_path / "copier").mkdir()
    account = signed_in(google, tmp_path / "copier", copy_on_quota=True)
    assert account.copy_on_quota
    return account


def test_copy_on_quota_downloads_a_copy_and_deletes_it(
    google: FakeGoogle, copier: Account, tmp_path: Path
):
    spec = serve(google, 900)
    google.fail(id_of(spec), "quota")
    src = source(copier)

    assert src.fetch(spec, tmp_path / spec.name).fetched

    assert (tmp_path / spec.name).read_bytes() == SERVED[id_of(spec)]
    (copy,) = google.copies
    assert (copy.source_id, copy.who) == (id_of(spec), DEFAULT_USER)
    assert [d.file_id for d in google.deleted] == [copy.file_id]
    assert google.media_requests(id_of(spec)) == 1
    assert google.media_requests(copy.file_id) == 1
    assert src.counts == {COPIED: 1}


def fail_copies(google: FakeGoogle, monkeypatch: pytest.MonkeyPatch, *faults: str) -> None:
    """Queue faults for the media requests of the next copy (the fake has no way to yet)."""
    queue = list(faults)
    original = google._next_fault

    def next_fault(fid: str, *, for_copy: bool = False) -> str:
        if not for_copy and queue and fid in {c.file_id for c in google.copies}:
            return queue.pop(0)
        return original(fid, for_copy=for_copy)

    monkeypatch.setattr(google, "_next_fault", next_fault)


@pytest.mark.parametrize(
    ("faults", "requests"),
    [(["quota"], 1), (["notFound"], 1), (["500"] * POLICY.attempts, POLICY.attempts)],
)
def test_a_failing_copy_fails_the_file_and_is_deleted(
    google: FakeGoogle,
    copier: Account,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    faults: list[str],
    requests: int,
):
    spec = serve(google, 901)
    google.fail(id_of(spec), "quota")
    fail_copies(google, monkeypatch, *faults)
    src = source(copier)

    with pytest.raises(DriveQuotaError, match=f"00901.png.*{id_of(spec)}"):
        src.fetch(spec, tmp_path / spec.name)

    (copy,) = google.copies
    assert google.media_requests(copy.file_id) == requests
    assert [d.file_id for d in google.deleted] == [copy.file_id]
    # The file is counted once, as over quota; the copy's own failure is not a second outcome.
    assert src.counts[QUOTA] == 1
    assert src.counts[COPIED] == src.counts[UNAVAILABLE] == src.counts[REFUSED] == 0
    assert not (tmp_path / spec.name).exists()


def test_a_refused_copy_fails_the_file(google: FakeGoogle, copier: Account, tmp_path: Path):
    spec = serve(google, 902)
    google.fail(id_of(spec), "quota", "500")  # the media request, then the copy
    src = source(copier)

    with pytest.raises(DriveQuotaError, match=QUOTA_ADVICE[:40]):
        src.fetch(spec, tmp_path / spec.name)

    assert google.copies == [] and google.deleted == []
    assert google.media_requests(id_of(spec)) == 1
    assert src.counts == {QUOTA: 1}


# 10. A service account.


def test_a_service_account_downloads(google: FakeGoogle, tmp_path: Path):
    spec = serve(google, 1000)
    account = Account(
        client_secrets=tmp_path / "none.json",
        credentials_file=tmp_path / "none-creds.json",
        service_account=service_key_file(google, tmp_path),
        api_endpoint=google.api_endpoint,
        timeout=10,
    )

    assert source(account).fetch(spec, tmp_path / spec.name).fetched

    assert (tmp_path / spec.name).read_bytes() == SERVED[id_of(spec)]
    (record,) = media_log(google)
    assert (record.file_id, record.who) == (id_of(spec), SERVICE_EMAIL)
    assert record.status in (200, 206)  # a ranged request
    assert not account.credentials_file.exists()


# 11. What an API error means.


def api_error(status: int, reason: str | None, message: str = "says Drive") -> bytes:
    errors = [{"domain": "global", "reason": reason, "message": message}] if reason else []
    return json.dumps({"error": {"code": status, "message": message, "errors": errors}}).encode()


def http_error(status: int, body: bytes, retry_after: str | None = "3") -> HttpError:
    headers: dict[str, object] = {"status": status}
    if retry_after is not None:
        headers["retry-after"] = retry_after
    return HttpError(httplib2.Response(headers), body)


@pytest.mark.parametrize(
    ("status", "reason", "kind"),
    [
        (403, "userRateLimitExceeded", "rate_limit"),
        (403, "rateLimitExceeded", "rate_limit"),
        (429, "rateLimitExceeded", "rate_limit"),
        (429, None, "rate_limit"),
        (403, "downloadQuotaExceeded", "quota"),
        (404, "notFound", "unavailable"),
        (403, "cannotDownloadFile", "unavailable"),
        (401, "authError", "auth"),
        (500, "backendError", "server"),
        (503, "backendError", "server"),
        (403, "insufficientPermissions", "refused"),
        (400, "badRequest", "refused"),
    ],
)
def test_classify_by_reason(status: int, reason: str | None, kind: str):
    failure = classify(http_error(status, api_error(status, reason)))

    assert (failure.kind, failure.status) == (kind, status)
    assert failure.reason == (reason or str(status))
    assert failure.message == "says Drive"
    assert failure.retry_after == 3.0


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (502, b"<html><body>Bad Gateway</body></html>", "server"),
        (403, b"<html><body>Forbidden</body></html>", "refused"),
        (404, b"Not Found", "unavailable"),
        (403, b'{"error": "not an object"}', "refused"),
        (403, b"[1, 2]", "refused"),
        (500, b"\xff\xfe not utf-8", "server"),
        (403, b"", "refused"),
    ],
)
def test_classify_bodies_that_are_not_api_errors(status: int, body: bytes, kind: str):
    failure = classify(http_error(status, body, retry_after=None))

    assert (failure.kind, failure.reason, failure.retry_after) == (kind, str(status), None)
    if body and body.isascii():
        assert failure.message == body.decode()


def test_classify_odd_retry_after_and_errors():
    body = json.dumps(
        {"error": {"message": "m", "errors": ["junk", {"reason": "rateLimitExceeded"}]}}
    ).encode()
    failure = classify(http_error(403, body, retry_after="later"))
    assert (failure.kind, failure.reason, failure.retry_after) == (
        "rate_limit",
        "rateLimitExceeded",
        None,
    )


def test_a_retry_after_of_hours_is_honoured_only_up_to_the_longest_wait() -> None:
    gate = RateGate(base=0.01, cap=0.02, seed=1, longest=5.0)
    assert 4.9 < gate.slow_down(3600.0) <= 5.0
