import pytest

from ffhq_aging_assets.lib.download_terms import RetryPolicy


def test_deadline_follows_size_and_minimum_rate() -> None:
    policy = RetryPolicy(min_bytes_per_second=50_000, deadline_grace=120)
    assert policy.deadline(4_000_000) == 120  # nothing arrived yet: the grace alone
    assert policy.deadline(4_000_000, received=1_000_000) == 140
    assert policy.deadline(4_000_000, received=9_000_000) == 200  # never past the size
    assert policy.deadline(None) == 120
    assert policy.deadline(None, received=5_000_000) == 220
    with pytest.raises(ValueError):
        RetryPolicy(min_bytes_per_second=0)
