"""Rates from two scrapes of a service's Prometheus text (what `meshctl status` shows)."""

from __future__ import annotations

import pytest

from mesh.runtime.metrics import Sample, rates, sample_of

TEXT = """# TYPE shop_rpc_requests_total counter
shop_rpc_requests_total{{method="/a",code="OK"}} {ok}
shop_rpc_requests_total{{method="/a",code="NOT_FOUND"}} {failed}
# TYPE shop_rpc_duration_seconds histogram
shop_rpc_duration_seconds_bucket{{method="/a",le="0.01"}} {fast}
shop_rpc_duration_seconds_bucket{{method="/a",le="0.1"}} {total}
shop_rpc_duration_seconds_bucket{{method="/a",le="+Inf"}} {total}
shop_rpc_duration_seconds_count{{method="/a"}} {total}
shop_rpc_duration_seconds_sum{{method="/a"}} 1.0
"""


def sample(at: float, ok: int, failed: int, fast: int) -> Sample:
    total = ok + failed
    return sample_of(TEXT.format(ok=ok, failed=failed, fast=fast, total=total), at)


def test_rates_between_two_samples() -> None:
    before = sample(10.0, ok=100, failed=0, fast=100)
    after = sample(12.0, ok=280, failed=20, fast=200)  # 200 more: 100 fast, 100 slower
    found = rates(before, after)
    assert found.requests_per_second == pytest.approx(100.0)
    assert found.error_ratio == pytest.approx(0.1)
    # 99% of 200 is 198: the 98th of the 100 in the (10 ms, 100 ms] bucket.
    assert found.p99_ms == pytest.approx(10 + 90 * 98 / 100)


def test_no_traffic_has_no_latency_and_no_errors() -> None:
    same = sample(1.0, ok=5, failed=1, fast=6)
    later = sample(3.0, ok=5, failed=1, fast=6)
    found = rates(same, later)
    assert (found.requests_per_second, found.error_ratio, found.p99_ms) == (0.0, 0.0, None)


def test_a_restart_in_between_counts_everything_after_it_as_new() -> None:
    before = sample(0.0, ok=500, failed=0, fast=500)
    restarted = sample(2.0, ok=10, failed=0, fast=10)
    assert rates(before, restarted).requests_per_second == pytest.approx(5.0)
    empty = sample_of("", 4.0)
    assert rates(restarted, empty).p99_ms is None


OUTBOX = """# TYPE shop_outbox_oldest_pending_seconds gauge
shop_outbox_oldest_pending_seconds {oldest}
# TYPE shop_outbox_parked_total counter
shop_outbox_parked_total {parked}
"""


def test_a_service_whose_outbox_waits_past_the_threshold_is_degraded() -> None:
    stuck = sample_of(OUTBOX.format(oldest=45.2, parked=0), 1.0)
    assert stuck.degraded() == ["the oldest event in its outbox has waited 45 s"]
    assert sample_of(OUTBOX.format(oldest=2.0, parked=0), 1.0).degraded() == []


def test_a_service_whose_outbox_parked_events_is_degraded() -> None:
    parked = sample_of(OUTBOX.format(oldest=0, parked=2), 1.0)
    assert parked.degraded() == ["its outbox parked 2 events (`meshctl dlq list`)"]


def test_a_service_running_without_a_feature_is_degraded_and_says_why() -> None:
    text = """# TYPE shop_feature_off gauge
shop_feature_off{feature="semantic ranking",reason="no embedding model at /x"} 1.0
# TYPE shop_consumer_pending gauge
shop_consumer_pending{consumer="search"} 0.0
shop_consumer_pending{consumer="search_rebuild"} 120.0
"""
    sample = sample_of(text, 1.0)
    assert sample.degraded() == ["runs without semantic ranking: no embedding model at /x"]
    assert sample.consumer_pending == {"search": 0.0, "search_rebuild": 120.0}
