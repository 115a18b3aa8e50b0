"""The PLPMTUD search (``mux.pmtud``) in memory: a simulated path answers the probes of the sizes it carries."""

from __future__ import annotations

import sys

import pytest

from mux.pmtud import BASE, ERROR, SEARCH_COMPLETE, SEARCHING, Search, interface_mtu


def run(search: Search, path_mtu: int, now: float = 0.0, timeout: float = 1.0) -> tuple[list[int], float]:
    """Drive ``search`` over a path of ``path_mtu``: every probe that fits is acknowledged at once, the others
    time out. Returns the probe sizes sent, in order, and the time when it stopped asking."""
    sent: list[int] = []
    while True:
        at = search.next_timer()
        if at is None or (search.state == SEARCH_COMPLETE and at > now + 1.0):
            return sent, now
        now = max(now, at)
        size = search.probe_due(now, timeout)
        if size is None:
            continue
        sent.append(size)
        if size <= path_mtu:
            search.probe_acked(size, now)
        else:
            now += timeout  # nothing comes back: the deadline passes


def test_climbs_the_candidate_sizes_to_the_maximum_and_stops() -> None:
    search = Search(1280, 9000)
    sent, _ = run(search, 65535)
    assert sent == [1400, 1420, 1480, 1492, 1500, 4096, 9000]
    assert search.pmtu == 9000 and search.state == SEARCH_COMPLETE
    assert search.next_timer() is None  # at the maximum: no raise timer


def test_an_odd_maximum_is_itself_a_candidate() -> None:
    search = Search(1280, 9001)  # an interface MTU off the list
    sent, _ = run(search, 65535)
    assert sent[-2:] == [9000, 9001] and search.pmtu == 9001


def test_a_lost_size_is_probed_max_probes_times_then_the_search_ends_below_it() -> None:
    search = Search(1280, 65535, max_probes=3)
    sent, _ = run(search, 1500)
    assert sent == [1400, 1420, 1480, 1492, 1500, 4096, 4096, 4096]
    assert search.pmtu == 1500 and search.state == SEARCH_COMPLETE


def test_the_raise_timer_searches_again_and_finds_a_grown_path() -> None:
    search = Search(1280, 65535, raise_interval=600.0)
    _, now = run(search, 1500)
    assert search.next_timer() == now + 600.0
    assert search.probe_due(now + 1.0, 1.0) is None  # not before the raise timer
    sent, _ = run(search, 9000, now=now + 600.0)
    assert sent[0] == 4096 and search.pmtu == 9000
    assert search.state == SEARCH_COMPLETE


def test_a_late_probe_loss_report_after_an_ack_changes_nothing() -> None:
    search = Search(1280, 9000)
    size = search.probe_due(0.0, 1.0)
    assert size == 1400
    assert search.probe_acked(1400, 0.1)
    search.probe_lost(1400, 0.2)  # reported lost after it was acked: not the probe out
    assert search.pmtu == 1400 and search.state == SEARCHING


def test_black_hole_drops_to_the_base_and_searches_again() -> None:
    search = Search(1280, 9000, max_probes=3)
    run(search, 65535)
    assert search.pmtu == 9000
    assert not search.packet_lost(10.0)
    assert not search.packet_lost(11.0)
    assert search.packet_lost(12.0)  # the third full-size loss in a row
    assert search.pmtu == 1280 and search.state == BASE
    assert search.probe_due(12.0, 1.0) == 1280  # the base is confirmed first
    search.probe_acked(1280, 12.1)
    assert search.state == SEARCHING
    sent, _ = run(search, 1500, now=12.1)
    assert search.pmtu == 1500 and sent[0] == 1400


def test_progress_between_losses_is_no_black_hole() -> None:
    search = Search(1280, 9000, max_probes=3)
    run(search, 65535)
    for _ in range(10):
        search.packet_lost(1.0)
        search.packet_lost(1.0)
        search.progress()
    assert search.pmtu == 9000


def test_losses_at_the_base_are_no_black_hole() -> None:
    search = Search(1280, 9000)
    for _ in range(10):
        assert not search.packet_lost(1.0)
    assert search.pmtu == 1280


def test_a_path_that_does_not_even_carry_the_base_is_in_error_and_keeps_asking() -> None:
    search = Search(1280, 9000, max_probes=2)
    run(search, 65535)
    search.black_hole(5.0)
    for t in (5.0, 6.0):
        assert search.probe_due(t, 1.0) == 1280
        search.probe_lost(1280, t + 1.0)
    assert search.state == ERROR and search.pmtu == 1280
    assert search.probe_due(7.0, 1.0) == 1280
    search.probe_acked(1280, 7.1)
    assert search.state == SEARCHING


def test_an_unanswered_probe_counts_as_lost_at_its_deadline() -> None:
    search = Search(1280, 9000, max_probes=1)
    assert search.probe_due(0.0, 2.0) == 1400
    assert search.probe_due(1.0, 2.0) is None  # still out
    assert search.next_timer() == 2.0
    assert search.probe_due(2.0, 2.0) is None  # lost: 1400 is too big, nothing between the base and it
    assert search.state == SEARCH_COMPLETE and search.pmtu == 1280


def test_a_lower_maximum_learnt_late_caps_the_size() -> None:
    search = Search(1280, 65535)
    run(search, 65535)
    assert search.pmtu == 65535
    search.set_maximum(1500)
    assert search.pmtu == 1500 and search.maximum == 1500


def test_off_when_the_maximum_is_the_base() -> None:
    search = Search(1280, 1280)
    assert search.next_timer() is None and search.probe_due(0.0, 1.0) is None
    search = Search(1280, 9000, enabled=False)
    assert search.probe_due(0.0, 1.0) is None and search.pmtu == 1280


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="IP_MTU is Linux's")
def test_the_interface_mtu_toward_loopback_is_loopbacks() -> None:
    mtu = interface_mtu(("127.0.0.1", 9))
    assert mtu is not None and mtu > 1500  # Linux's lo: 65536
