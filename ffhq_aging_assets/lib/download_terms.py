"""The terms of a download: what to fetch, how hard to try, and the clock a file runs against.

:class:`FileSpec` and :class:`RetryPolicy` are what the caller chooses (both are imported from
:mod:`ffhq_aging_assets.lib.download`, the public entry). :class:`Deadline` is the clock one file
runs against, read by the retry loop there between attempts and by the HTTP attempt
(:mod:`ffhq_aging_assets.lib.download_attempt`) between reads; :class:`AttemptFailed` is how an
attempt tells the loop what went wrong and whether another attempt may help.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class FileSpec:
    """A file to fetch: where from, what to call it in messages, and what it must hash to.

    ``url`` is an ``http(s)://`` URL, a ``file://`` URL or a local path.
    """

    url: str
    name: str
    size: int | None = None
    md5: str | None = None

    def difference(self, size: int, md5: str) -> str:
        """How a file of ``size`` bytes and digest ``md5`` (``""``: unhashed) differs from this."""
        want = f"{self.size:,} bytes" if self.size is not None else "any size"
        if self.md5:
            want += f", md5 {self.md5}"
        got = f"{size:,} bytes" + (f", md5 {md5}" if md5 else "")
        return f"expected {want}; got {got}"


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try: attempts, backoff between them, timeouts and a per-file deadline.

    Timeouts and the grace are in seconds. ``connect_timeout`` and ``read_timeout`` bound each
    request (the read timeout is the longest silence tolerated); the deadline (see
    :meth:`deadline`) bounds the whole file across attempts and the waits between them.
    """

    attempts: int = 5
    backoff: float = 2.0
    max_backoff: float = 120.0
    connect_timeout: float = 15.0
    read_timeout: float = 60.0
    min_bytes_per_second: float = 50_000.0
    deadline_grace: float = 120.0

    def __post_init__(self) -> None:
        if self.min_bytes_per_second <= 0 or self.deadline_grace <= 0:
            raise ValueError("min_bytes_per_second and deadline_grace must be positive")

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before attempt ``attempt + 1``: exponential with jitter."""
        base = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
        wait = base * (0.5 + random.random() / 2)
        return max(wait, min(retry_after or 0.0, self.max_backoff))

    def deadline(self, size: int | None, received: int = 0) -> float:
        """Seconds a whole file may take so far: the grace, plus what arrived at the minimum rate.

        ``received`` is the most bytes any attempt got, capped at the file's ``size`` when it
        is known (so no file may take longer than the grace plus its size at the minimum rate).
        A file arriving at least at ``min_bytes_per_second`` on average is never cut short; one
        that trickles, or a server that never answers, is given up after about the grace,
        however many attempts that leaves.
        """
        counted = received if size is None else min(size, received)
        return self.deadline_grace + counted / self.min_bytes_per_second


class AttemptFailed(Exception):
    """Why one attempt failed, in plain words, and whether another attempt may help.

    ``wrong`` identifies the wrong bytes of a checksum failure (what was received, not how),
    so that the same wrong answer twice is recognised as the source's and not the network's.
    """

    def __init__(
        self,
        cause: str,
        *,
        retry: bool = True,
        retry_after: float | None = None,
        wrong: tuple[str, ...] | None = None,
    ) -> None:
        super().__init__(cause)
        self.cause = cause
        self.retry = retry
        self.retry_after = retry_after
        self.wrong = wrong


def seconds_text(seconds: float) -> str:
    """A duration as messages show it: ``"2 s"``, ``"0.5 s"``, ``"1,200 s"``."""
    return f"{seconds:,.0f} s" if seconds >= 10 else f"{seconds:.2g} s"


def _amount(count: float) -> str:
    for factor, unit in ((1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
        if count >= factor:
            return f"{count / factor:.3g} {unit}"
    return f"{count:.3g} bytes"


class Deadline:
    """The time one file may take in all, from the first request to its last byte."""

    def __init__(self, policy: RetryPolicy, size: int | None) -> None:
        self.policy = policy
        self.size = size
        self.received = 0  # bytes of the response being read
        self._most = 0
        self._start = time.monotonic()

    def progress(self, received: int) -> None:
        """Record that the response being read has brought ``received`` bytes so far."""
        self.received = received
        self._most = max(self._most, received)

    @property
    def seconds(self) -> float:
        """The deadline as it stands, given the most bytes any attempt received."""
        return self.policy.deadline(self.size, self._most)

    def remaining(self) -> float:
        """Seconds left; zero or less once the deadline has passed."""
        return self._start + self.seconds - time.monotonic()

    def check(self) -> float:
        """Seconds left; raises the final failure once there are none.

        Raises:
            AttemptFailed: not to be retried, saying the file missed its deadline.
        """
        left = self.remaining()
        if left <= 0:
            raise AttemptFailed(self.missed(), retry=False)
        return left

    def timeouts(self) -> tuple[float, float]:
        """(connect, read) timeouts for a request: the policy's, but never past the deadline."""
        left = self.check()
        return min(self.policy.connect_timeout, left), min(self.policy.read_timeout, left)

    def describe(self) -> str:
        """The deadline and how it is reckoned, in plain words."""
        grace = seconds_text(self.policy.deadline_grace)
        rate = self.policy.min_bytes_per_second
        terms = f"{grace}, plus 1 s for every {_amount(rate)} received"
        if self.size is not None:
            most = seconds_text(self.policy.deadline(self.size, self.size))
            terms += f", at most {most} for its {self.size:,} bytes"
        return f"its deadline of {seconds_text(self.seconds)} ({terms})"

    def missed(self) -> str:
        """Why the file was given up when its deadline passed."""
        return f"it did not arrive within {self.describe()}; received {self.received:,} bytes"
