"""Logs that remote input can cause are rate-limited per kind and cut short (mux/logs.py)."""

from __future__ import annotations

import logging

import pytest

from mux import logs


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [1000.0]
    monkeypatch.setattr(logs, "_clock", lambda: now[0])
    monkeypatch.setattr(logs, "_buckets", {})
    return now


def test_a_burst_then_the_rate_then_a_count_of_what_was_held_back(
    clock: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    log = logging.getLogger("mux.test")
    caplog.set_level(logging.DEBUG, "mux.test")
    for i in range(10_000):
        logs.peer_log(log, "flood", "peer said %s", i)
    assert len(caplog.records) == logs.BURST
    clock[0] += 2.0  # two seconds later: the bucket refilled by 2 * RATE lines
    for i in range(10_000):
        logs.peer_log(log, "flood", "peer said %s", i)
    later = caplog.records[logs.BURST :]
    assert len(later) == int(2 * logs.RATE)
    assert "(9980 similar lines suppressed)" in later[0].getMessage()
    assert all(r.levelno == logging.DEBUG for r in caplog.records)


def test_kinds_are_limited_separately_and_arguments_are_cut(
    clock: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    log = logging.getLogger("mux.test")
    caplog.set_level(logging.DEBUG, "mux.test")
    for _ in range(100):
        logs.peer_log(log, "a", "a %s", b"\xff" * 10_000)
        logs.limited_log(log, logging.ERROR, "b", "b %s", "x" * 10_000)
    assert [r.getMessage()[0] for r in caplog.records].count("a") == logs.BURST
    assert [r.getMessage()[0] for r in caplog.records].count("b") == logs.BURST
    assert max(len(r.getMessage()) for r in caplog.records) <= logs.MAX_ARG + 10


def test_nothing_is_spent_while_the_level_is_off(clock: list[float], caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("mux.test.quiet")
    caplog.set_level(logging.INFO, "mux.test.quiet")
    for _ in range(100):
        logs.peer_log(log, "quiet", "never shown")
    assert not caplog.records and "quiet" not in logs._buckets
