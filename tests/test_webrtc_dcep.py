"""DCEP (RFC 8832): DATA_CHANNEL_OPEN as browsers send it, and its mapping onto our PR-SCTP policies."""

from __future__ import annotations

import pytest

from mux.webrtc import dcep


def test_open_reliable_ordered_round_trip() -> None:
    raw = dcep.ChannelOpen(dcep.RELIABLE, 256, 0, "chat", "json").encode()
    assert raw[:12] == bytes([3, 0, 1, 0, 0, 0, 0, 0, 0, 4, 0, 4])
    opened = dcep.parse_open(raw)
    assert opened.ordered and opened.reliability == ("reliable", 0)
    assert opened.props() == {
        "label": "chat",
        "protocol": "json",
        "ordered": True,
        "max_retransmits": None,
        "max_packet_life_time": None,
        "priority": 256,
    }


def test_unordered_without_retransmission_and_timed() -> None:
    rexmit = dcep.parse_open(dcep.ChannelOpen(dcep.UNORDERED | dcep.PARTIAL_RELIABLE_REXMIT, 0, 0, "u", "").encode())
    assert not rexmit.ordered and rexmit.reliability == ("rexmit", 0)
    assert rexmit.props()["max_retransmits"] == 0 and rexmit.props()["max_packet_life_time"] is None
    timed = dcep.parse_open(dcep.ChannelOpen(dcep.PARTIAL_RELIABLE_TIMED, 0, 150, "t", "").encode())
    assert timed.ordered and timed.reliability == ("timed", 150)
    assert timed.props()["max_packet_life_time"] == 150


def test_bad_opens_are_refused() -> None:
    with pytest.raises(dcep.DcepError):
        dcep.parse_open(b"\x02")  # an ACK
    with pytest.raises(dcep.DcepError):
        dcep.parse_open(dcep.ChannelOpen(0x05, 0, 0, "x", "").encode())
    with pytest.raises(dcep.DcepError):
        dcep.parse_open(dcep.ChannelOpen(0, 0, 0, "long label", "").encode()[:-3])
