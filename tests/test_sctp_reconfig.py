"""Stream reconfiguration (RFC 6525) in memory, on the seeded lossy link and against a hand-driven peer.

A stream reset never reorders a stream: what was sent before it is delivered first, what is sent after starts a
new use of the stream at SSN 0, delivered after the reset; requests and responses survive loss (a lost request is
sent again unchanged, a retransmitted one gets the answer given before); the peer's data above its reset point
waits until the reset can be carried out; streams can be added both ways within what the receiver offered.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mux.sctp import events as ev
from mux.sctp import extensions as ext
from mux.sctp.association import Association, SctpError
from mux.sctp.chunks import (
    CookieAckChunk,
    CookieEchoChunk,
    DataChunk,
    IDataChunk,
    InitAckChunk,
    InitChunk,
    ReconfigChunk,
    SackChunk,
)
from mux.sctp.config import SctpConfig
from mux.sctp.endpoint import Endpoint
from mux.sctp.packet import parse_packet, serialize_packet
from mux.sctp.params import (
    RESULT_BAD_SEQUENCE,
    RESULT_DENIED,
    RESULT_IN_PROGRESS,
    RESULT_PERFORMED,
    AddOutgoingStreamsRequest,
    IncomingSsnResetRequest,
    OutgoingSsnResetRequest,
    ReconfigParam,
    ReconfigResponse,
    SsnTsnResetRequest,
    StateCookieParam,
    SupportedExtensionsParam,
    UnknownParam,
    parse_reconfig_params,
)
from tests.sctp_link import Network, Node, RawPeer, Sent, chunks_of, drain, handshake

A = ("10.0.0.1", 40001)
B = ("10.0.0.2", 40002)
NOW = 1000.0
LOSSY = {"loss": 0.1, "reorder": 0.1, "dup": 0.02, "delay": 0.01, "reorder_delay": 0.03}


def pair(
    seed: int = 1, a: SctpConfig | None = None, b: SctpConfig | None = None, **path: Any
) -> tuple[Network, Node, Node, Association, Association]:
    net = Network(seed, **path)
    na, nb = net.add(A, a or SctpConfig()), net.add(B, b or SctpConfig())
    ca, sb = handshake(net, na, nb)
    return net, na, nb, ca, sb


def reconfigs(sent: list[Sent]) -> list[ReconfigParam]:
    out: list[ReconfigParam] = []
    for s in sent:
        for c in s.chunks():
            if isinstance(c, ReconfigChunk):
                out.extend(parse_reconfig_params(c.params))
    return out


def of_kind(params: list[ReconfigParam], kind: type[Any]) -> list[Any]:
    return [p for p in params if isinstance(p, kind)]


# -- a hand-driven peer that offers RE-CONFIG ---------------------------------------------------------------------


def reconf_connect(
    config: SctpConfig | None = None, *, a_rwnd: int = 1 << 20, tsn: int = 1000, os_: int = 16, mis: int = 16
) -> tuple[Endpoint, Association, RawPeer]:
    """An association accepted by a real endpoint from a raw peer whose INIT offers RE-CONFIG."""
    server = Endpoint(config or SctpConfig(), local_port=5000, rng=random.Random(7))
    offer = [SupportedExtensionsParam([ext.RE_CONFIG])]
    init = InitChunk(0x1234_5678, a_rwnd, os_, mis, tsn, offer)
    server.receive_datagram(serialize_packet(6000, 5000, 0, [init]), A, NOW)
    ((reply, _a),) = server.datagrams_to_send(NOW)
    ack = parse_packet(reply).chunks[0]
    assert isinstance(ack, InitAckChunk)
    cookie = next(p.cookie for p in ack.params if isinstance(p, StateCookieParam))
    assoc = server.receive_datagram(serialize_packet(6000, 5000, ack.initiate_tag, [CookieEchoChunk(cookie)]), A, NOW)
    assert assoc is not None and assoc.features & ext.RECONFIG
    while server.next_event() is not None:
        pass
    out = chunks_of(assoc.datagrams_to_send(NOW))
    assert any(isinstance(c, CookieAckChunk) for c in out)
    drain(assoc)
    return server, assoc, RawPeer(A, 6000, 5000, 0x1234_5678, ack.initiate_tag, tsn, ack.initial_tsn)


def feed(server: Endpoint, peer: RawPeer, *chunks: Any, now: float = NOW) -> None:
    server.receive_datagram(peer.packet(*chunks), A, now)


def answers(assoc: Association, now: float = NOW) -> list[ReconfigParam]:
    out: list[ReconfigParam] = []
    for c in chunks_of(assoc.datagrams_to_send(now)):
        if isinstance(c, ReconfigChunk):
            out.extend(parse_reconfig_params(c.params))
    return out


# -- negotiation ----------------------------------------------------------------------------------------------------


def test_re_config_is_used_only_when_both_ends_offer_it() -> None:
    *_, ca, sb = pair()
    assert ca.features & ext.RECONFIG and sb.features & ext.RECONFIG
    assert ca.features & ext.MUX and sb.features & ext.MUX  # mux peers recognise each other
    *_, ca, sb = pair(2, b=SctpConfig(reconf_enable=False))
    assert not ca.features & ext.RECONFIG and not sb.features & ext.RECONFIG
    with pytest.raises(SctpError, match="RE-CONFIG"):
        ca.close_stream(0)
    with pytest.raises(SctpError, match="RE-CONFIG"):
        ca.add_streams(outgoing=1)


# -- requests and responses over a lossy link ---------------------------------------------------------------------


def drop_first(net: Network, src: tuple[str, int], pred: Any) -> list[Sent]:
    """Drop the first datagram from ``src`` that ``pred`` likes; returns the list it is put in."""
    dropped: list[Sent] = []

    def intercept(s: Sent) -> bool | None:
        if not dropped and s.src == src and pred(s):
            dropped.append(s)
            return False
        return None

    net.intercept = intercept
    return dropped


def has_request(s: Sent) -> bool:
    return any(isinstance(p, OutgoingSsnResetRequest) for p in reconfigs([s]))


def has_response(s: Sent) -> bool:
    return any(isinstance(p, ReconfigResponse) for p in reconfigs([s]))


def test_a_lost_request_is_sent_again_unchanged_and_performed_once() -> None:
    net, na, nb, ca, sb = pair(3)
    for i in range(3):
        ca.send(1, b"old %d" % i, now=net.now)
    ca.close_stream(1)
    ca.send(1, b"new 0", now=net.now)
    dropped = drop_first(net, A, has_request)
    assert net.run_until(lambda: bool(na.of(ca, ev.OutgoingStreamsReset)) and len(nb.of(sb, ev.DataReceived)) == 4)
    assert dropped and ca.stats["reconfig_retransmits"] == 1
    requests = of_kind(reconfigs(net.sent_by(A)), OutgoingSsnResetRequest)  # the dropped one included
    assert len(requests) == 2 and requests[0] == requests[1]  # the same sequence number, the same last TSN
    assert [e.stream_ids for e in nb.of(sb, ev.StreamReset)] == [[1]]
    got = [getattr(e, "data", "reset") for e in nb.events[sb] if isinstance(e, (ev.DataReceived, ev.StreamReset))]
    assert got == [b"old 0", b"old 1", b"old 2", "reset", b"new 0"]  # the reset between the two uses


def test_a_lost_response_gets_the_same_answer_again() -> None:
    net, na, nb, ca, sb = pair(4)
    ca.send(2, b"x", now=net.now)
    assert net.run_until(lambda: bool(nb.of(sb, ev.DataReceived)))
    ca.close_stream(2)
    dropped = drop_first(net, B, has_response)
    assert net.run_until(lambda: bool(na.of(ca, ev.OutgoingStreamsReset)))
    assert dropped
    responses = of_kind(reconfigs(net.sent_by(B)), ReconfigResponse)
    assert len(responses) == 2 and responses[0] == responses[1] and responses[0].result == RESULT_PERFORMED
    assert len(nb.of(sb, ev.StreamReset)) == 1  # the retransmission was not carried out twice
    assert sb.stats["reconfig_received"] == 2


def test_a_request_never_answered_ends_the_association_after_asocmaxrxt() -> None:
    net, na, _nb, ca, _sb = pair(5, a=SctpConfig(asocmaxrxt=3, hbinterval=0))
    ca.close_stream(0)
    net.intercept = lambda s: False if s.src == B else None  # the peer's answers never come back
    assert net.run_until(lambda: na.closed(ca), 60)
    (aborted,) = na.of(ca, ev.AssociationAborted)
    assert "communication lost" in aborted.reason
    assert len(of_kind(reconfigs(net.sent_by(A)), OutgoingSsnResetRequest)) == 1 + 3


# -- the peer's requests, by hand -----------------------------------------------------------------------------------


def test_retransmitted_and_out_of_sequence_requests() -> None:
    server, assoc, peer = reconf_connect()
    feed(server, peer, peer.data(b"a", stream_id=1))
    drain(assoc)
    done = (peer.next_tsn - 1) & 0xFFFFFFFF
    request = OutgoingSsnResetRequest(1000, 0, done, [1])
    feed(server, peer, ReconfigChunk([request]))
    assert answers(assoc) == [ReconfigResponse(1000, RESULT_PERFORMED)]
    feed(server, peer, ReconfigChunk([request]))  # the response was lost: the same answer, nothing done again
    assert answers(assoc) == [ReconfigResponse(1000, RESULT_PERFORMED)]
    assert [e.stream_ids for e in drain(assoc) if isinstance(e, ev.StreamReset)] == [[1]]
    feed(server, peer, ReconfigChunk([OutgoingSsnResetRequest(1005, 0, done, [1])]))
    assert answers(assoc) == [ReconfigResponse(1005, RESULT_BAD_SEQUENCE)]
    feed(server, peer, ReconfigChunk([SsnTsnResetRequest(1001)]))  # not supported: denied, and counted as seen
    assert answers(assoc) == [ReconfigResponse(1001, RESULT_DENIED)]
    feed(server, peer, ReconfigChunk([OutgoingSsnResetRequest(1002, 0, done, [99])]))  # no such stream
    assert answers(assoc) == [ReconfigResponse(1002, RESULT_DENIED)]
    assert not [e for e in drain(assoc) if isinstance(e, ev.StreamReset)]


def test_malformed_re_config_chunks_are_dropped_and_counted() -> None:
    server, assoc, peer = reconf_connect()
    bad = [
        ReconfigChunk([UnknownParam(13, b"\x00\x00\x00")]),  # truncated
        ReconfigChunk([UnknownParam(14, b"\x00\x00\x03\xe8\x00")]),  # odd stream list
        ReconfigChunk([UnknownParam(99, b"\x00" * 8)]),  # no such parameter
        ReconfigChunk([SsnTsnResetRequest(1000), SsnTsnResetRequest(1001)]),  # not an allowed combination
        ReconfigChunk([]),
    ]
    for chunk in bad:
        feed(server, peer, chunk)
    assert answers(assoc) == []
    assert assoc.stats["reconfig_malformed"] == len(bad) and assoc.state == "established"
    feed(server, peer, ReconfigChunk([OutgoingSsnResetRequest(1000, 0, 999, [])]))  # 1000 is still expected
    assert answers(assoc) == [ReconfigResponse(1000, RESULT_PERFORMED)]


def test_deferred_reset_holds_what_comes_after_it_until_what_came_before() -> None:
    """The peer resets stream 1 after TSN t2 while t1 is missing: data above t2 on stream 1 (SSN 0 of the new use
    among it) waits, and is neither dropped as a duplicate SSN nor delivered into the old use; other streams go
    on. When t1 comes: the old messages, the reset, the new ones; and an unsolicited "Performed"."""
    server, assoc, peer = reconf_connect()
    t0 = peer.data(b"old 0", stream_id=1)
    t1 = peer.data(b"old 1", stream_id=1)
    t2 = peer.data(b"old 2", stream_id=1)
    peer.ssn[1] = 0  # the peer's reset: its next message on stream 1 is SSN 0 again
    new0 = peer.data(b"new 0", stream_id=1)
    other = peer.data(b"other", stream_id=2)
    new1 = peer.data(b"new 1", stream_id=1)
    feed(server, peer, t0, t2)
    request = OutgoingSsnResetRequest(1000, 0, t2.tsn, [1])
    feed(server, peer, ReconfigChunk([request]))
    assert answers(assoc) == [ReconfigResponse(1000, RESULT_IN_PROGRESS)]
    feed(server, peer, new1, other, new0)  # the new use arrives first, out of order
    got = drain(assoc)
    assert [e.data for e in got if isinstance(e, ev.DataReceived)] == [b"old 0", b"other"]
    feed(server, peer, ReconfigChunk([request]))  # a retransmission while still waiting: still in progress
    assert answers(assoc) == [ReconfigResponse(1000, RESULT_IN_PROGRESS)]
    feed(server, peer, t1)
    assert answers(assoc) == [ReconfigResponse(1000, RESULT_PERFORMED)]  # said at once, unasked
    got = drain(assoc)
    assert [(type(e).__name__, getattr(e, "data", None)) for e in got] == [
        ("DataReceived", b"old 1"),
        ("DataReceived", b"old 2"),
        ("StreamReset", None),
        ("DataReceived", b"new 0"),
        ("DataReceived", b"new 1"),
    ]
    assert "duplicate_ssns" not in assoc.stats
    feed(server, peer, ReconfigChunk([request]))  # and now a late retransmission gets the final answer
    assert answers(assoc) == [ReconfigResponse(1000, RESULT_PERFORMED)]
    assert assoc.status()["held_bytes"] == 0  # what was held went to the application, which read it


def test_incoming_reset_request_drops_unsent_data_and_is_answered_with_an_outgoing_reset() -> None:
    server, assoc, peer = reconf_connect(a_rwnd=4000)  # the peer's window keeps most of our messages queued
    for i in range(10):
        assoc.send(3, bytes([i]) * 1000, now=NOW)
    sent = [c for c in chunks_of(assoc.datagrams_to_send(NOW)) if isinstance(c, DataChunk)]
    assert 0 < len(sent) < 10
    feed(server, peer, ReconfigChunk([IncomingSsnResetRequest(1000, [3])]))
    out = chunks_of(assoc.datagrams_to_send(NOW))
    params = [p for c in out if isinstance(c, ReconfigChunk) for p in parse_reconfig_params(c.params)]
    assert ReconfigResponse(1000, RESULT_PERFORMED) in params
    (reset,) = of_kind(params, OutgoingSsnResetRequest)
    last = sent[-1]
    assert reset.streams == [3] and reset.response_seq == 1000 and reset.last_tsn == last.tsn
    assert not [c for c in out if isinstance(c, DataChunk)]  # the unsent messages are gone
    assert assoc.stats["reset_dropped_bytes"] == (10 - len(sent)) * 1000
    assert [e.stream_ids for e in drain(assoc) if isinstance(e, ev.StreamResetRequested)] == [[3]]
    # the peer performs it: our stream 3 starts over at SSN 0
    feed(server, peer, ReconfigChunk([ReconfigResponse(reset.request_seq, RESULT_PERFORMED)]))
    assert [e.stream_ids for e in drain(assoc) if isinstance(e, ev.OutgoingStreamsReset)] == [[3]]
    feed(server, peer, SackChunk(last.tsn, 1 << 20, [], []))
    assoc.send(3, b"again", now=NOW)
    again = [c for c in chunks_of(assoc.datagrams_to_send(NOW + 1)) if isinstance(c, DataChunk)]
    assert [(c.data, c.ssn) for c in again] == [(b"again", 0)]


def our_request(assoc: Association, now: float = NOW) -> list[ReconfigParam]:
    requests = [p for p in answers(assoc, now) if not isinstance(p, ReconfigResponse)]
    assert requests, "no request"
    return requests


def test_answers_to_our_requests_in_progress_busy_and_implicit() -> None:
    """ "In progress": asked again an RTO later, same sequence number, no loss counted, until an unsolicited
    "Performed" ends it. "Request already in progress" (the peer has one of its own out): asked again later as a
    new request. An Incoming SSN Reset Request is answered by the peer's Outgoing SSN Reset Request naming it."""
    server, assoc, peer = reconf_connect()
    assoc.close_stream(2)
    (first,) = our_request(assoc)
    assert isinstance(first, OutgoingSsnResetRequest) and first.request_seq == assoc._initial_tsn
    feed(server, peer, ReconfigChunk([ReconfigResponse(first.request_seq, RESULT_IN_PROGRESS)]))
    errors = assoc._error_count
    when = assoc.get_timer()
    assert when is not None and answers(assoc) == []
    assoc.handle_timer(when)
    assert our_request(assoc, when) == [first]  # the same request
    assert assoc._error_count == errors and "reconfig_retransmits" not in assoc.stats
    feed(server, peer, ReconfigChunk([ReconfigResponse(first.request_seq, RESULT_PERFORMED)]), now=when)
    assert [e.stream_ids for e in drain(assoc) if isinstance(e, ev.OutgoingStreamsReset)] == [[2]]
    assert assoc.get_timer() is None or assoc.get_timer() > when + 1  # nothing of ours in flight any more

    assoc.close_stream(3)
    (second,) = our_request(assoc, when)
    feed(server, peer, ReconfigChunk([ReconfigResponse(second.request_seq, 4)]), now=when)  # busy with its own
    assert answers(assoc, when) == []
    later = assoc.get_timer()
    assert later is not None and later > when
    assoc.handle_timer(later)
    (third,) = our_request(assoc, later)
    assert isinstance(third, OutgoingSsnResetRequest)
    assert third.streams == [3] and third.request_seq == second.request_seq + 1  # a new request
    feed(server, peer, ReconfigChunk([ReconfigResponse(third.request_seq, RESULT_PERFORMED)]), now=later)
    assert [e.stream_ids for e in drain(assoc) if isinstance(e, ev.OutgoingStreamsReset)] == [[3]]

    feed(server, peer, peer.data(b"to be stopped", stream_id=5), now=later)
    drain(assoc)
    assoc.request_reset(5)
    (ask,) = our_request(assoc, later)
    assert ask == IncomingSsnResetRequest(third.request_seq + 1, [5])
    done = (peer.next_tsn - 1) & 0xFFFFFFFF
    feed(server, peer, ReconfigChunk([OutgoingSsnResetRequest(1000, ask.request_seq, done, [5])]), now=later)
    assert answers(assoc, later) == [ReconfigResponse(1000, RESULT_PERFORMED)]
    assert [e.stream_ids for e in drain(assoc) if isinstance(e, ev.StreamReset)] == [[5]]
    assert assoc._reconfig.inflight is None  # the peer's reset was the answer to ours


@pytest.mark.parametrize("idata", [False, True])
def test_messages_sent_during_a_reset_wait_for_it(idata: bool) -> None:
    """What is sent on a stream while its reset is under way leaves only after the peer performed it, numbered from
    0 again (SSNs, or with I-DATA both MID counters: RFC 8260 §2.3.2)."""
    cfg = SctpConfig(intl_enable=idata)
    net, _na, nb, ca, sb = pair(6, cfg, cfg, delay=0.05)
    assert bool(ca.features & ext.IDATA) == idata
    data_kind = IDataChunk if idata else DataChunk
    ca.send(4, b"before", now=net.now)
    ca.close_stream(4)
    for i in range(3):
        ca.send(4, b"during %d" % i, now=net.now)
    ca.send(5, b"other stream", now=net.now)  # not held up
    assert net.run_until(lambda: len(nb.of(sb, ev.DataReceived)) == 5)
    performed = next(s.time for s in net.sent_by(B) if has_response(s))
    (request,) = of_kind(reconfigs(net.sent_by(A)), OutgoingSsnResetRequest)
    for s in net.sent_by(A):
        for c in s.chunks():
            if isinstance(c, data_kind) and c.stream_id == 4 and c.data.startswith(b"during"):
                assert s.time > performed and c.tsn != request.last_tsn and c.ssn == int(c.data[-1:])
    other = next(s.time for s in net.sent_by(A) for c in s.chunks() if isinstance(c, data_kind) and c.stream_id == 5)
    assert other < performed


# -- adding streams ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(3))
def test_streams_are_added_both_ways_within_what_the_receiver_offered(seed: int) -> None:
    net, na, nb, ca, sb = pair(
        20 + seed, a=SctpConfig(num_ostreams=4), b=SctpConfig(num_ostreams=3, max_instreams=8), **LOSSY
    )
    assert (ca.outbound_streams, ca.inbound_streams) == (4, 3)
    with pytest.raises(SctpError):
        ca.send(5, b"not yet", now=net.now)
    ca.add_streams(outgoing=4)  # B takes up to 8
    assert net.run_until(lambda: bool(na.of(ca, ev.StreamsAdded)), 30)
    assert (ca.outbound_streams, sb.inbound_streams) == (8, 8)
    assert nb.of(sb, ev.StreamsAdded) == [ev.StreamsAdded(0, 4, 3, 8)]
    ca.send(7, b"on a new stream", now=net.now)
    assert net.run_until(lambda: any(e.stream_id == 7 for e in nb.of(sb, ev.DataReceived)), 30)
    ca.add_streams(outgoing=1)  # beyond what B offered: denied
    assert net.run_until(lambda: ca.stats.get("add_streams_refused") == 1, 30)
    assert ca.outbound_streams == 8
    ca.add_streams(incoming=2)  # we take two more from B: it adds them as outgoing streams
    assert net.run_until(lambda: ca.inbound_streams == 5 and sb.outbound_streams == 5, 30)
    sb.send(4, b"back on a new stream", now=net.now)
    assert net.run_until(lambda: any(e.stream_id == 4 for e in na.of(ca, ev.DataReceived)), 30)
    with pytest.raises(SctpError):
        ca.add_streams(incoming=100)  # beyond our own max_instreams (16)


def test_add_outgoing_streams_request_by_hand() -> None:
    server, assoc, peer = reconf_connect(os_=4)
    assert assoc.inbound_streams == 4
    feed(server, peer, ReconfigChunk([AddOutgoingStreamsRequest(1000, 12)]))
    assert answers(assoc) == [ReconfigResponse(1000, RESULT_PERFORMED)]
    assert assoc.inbound_streams == 16
    feed(server, peer, ReconfigChunk([AddOutgoingStreamsRequest(1001, 1)]))  # max_instreams is 16
    assert answers(assoc) == [ReconfigResponse(1001, RESULT_DENIED)]
    feed(server, peer, peer.data(b"on stream 15", stream_id=15))
    assert [e.stream_id for e in drain(assoc) if isinstance(e, ev.DataReceived)] == [15]


# -- stream ids in use and free again --------------------------------------------------------------------------------


def test_an_id_is_free_again_once_both_directions_are_reset() -> None:
    net, na, nb, ca, sb = pair(8)
    sid = ca.open_stream()
    assert sid == 0 and ca.open_stream() == 1
    ca.send(sid, b"ping", now=net.now)
    assert net.run_until(lambda: bool(nb.of(sb, ev.DataReceived)))
    sb.claim_stream(sid)  # the peer's side: its direction of the stream it was sent on is open too
    sb.send(sid, b"pong", now=net.now)
    ca.close_stream(sid)
    assert net.run_until(lambda: bool(na.of(ca, ev.OutgoingStreamsReset)))
    assert ca.stream_in_use(sid) and not na.of(ca, ev.StreamClosed)  # the peer's direction is still open
    sb.close_stream(sid)
    assert net.run_until(lambda: bool(na.of(ca, ev.StreamClosed)) and bool(nb.of(sb, ev.StreamClosed)))
    assert na.of(ca, ev.StreamClosed) == [ev.StreamClosed(sid)]
    assert ca.open_stream() == sid  # handed out again
    ca.close_stream(3)
    with pytest.raises(SctpError, match="being reset"):
        ca.open_stream(3)


def test_ex_sctp_style_api_and_events() -> None:
    """ex_sctp's calls on the core: ``open_stream``, ``configure_stream``, ``close_stream``; and its events:
    ``StreamOpened`` (with ``announce_streams``) before a stream's first message, ``StreamReset`` when the peer
    closes its direction, ``StreamClosed`` when an id is free again."""
    net, na, nb, ca, sb = pair(9)
    sb.announce_streams = True
    assert ca.open_stream(5) == 5
    ca.configure_stream(5, ordered=False)
    ca.send(5, b"first", now=net.now)
    assert net.run_until(lambda: bool(nb.of(sb, ev.DataReceived)))
    assert [type(e).__name__ for e in nb.events[sb][1:]] == ["StreamOpened", "DataReceived"]
    assert nb.of(sb, ev.DataReceived)[0].unordered
    ca.close_stream(5)
    ca.send(5, b"second", now=net.now)  # waits for the reset, then opens the stream anew at the peer
    assert net.run_until(lambda: len(nb.of(sb, ev.DataReceived)) == 2)
    assert [type(e).__name__ for e in nb.events[sb][1:]] == [
        "StreamOpened",
        "DataReceived",
        "StreamReset",
        "StreamOpened",
        "DataReceived",
    ]
    assert na.of(ca, ev.OutgoingStreamsReset) == [ev.OutgoingStreamsReset([5])]
    assert not na.of(ca, ev.StreamClosed)  # in use again: "second" started a new use
    ca.close_stream(5)
    sb.close_stream(5)  # and the peer closes its (unused) direction: the id is free on both sides
    assert net.run_until(lambda: bool(na.of(ca, ev.StreamClosed)))
    assert na.of(ca, ev.StreamClosed) == [ev.StreamClosed(5)] and not ca.stream_in_use(5)


# -- the property ---------------------------------------------------------------------------------------------------

ACTIONS = st.lists(
    st.tuples(
        st.sampled_from(["send", "send", "burst", "wait", "close", "close", "stop"]),
        st.integers(0, 3),
        st.integers(1, 3000),
    ),
    min_size=5,
    max_size=60,
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    actions=ACTIONS,
    seed=st.integers(0, 1 << 16),
    loss=st.sampled_from([0.0, 0.05, 0.2]),
    unordered=st.booleans(),
    idata=st.booleans(),
)
def test_resets_and_losses_never_duplicate_reorder_or_cross_epochs(
    actions: list[tuple[str, int, int]], seed: int, loss: float, unordered: bool, idata: bool
) -> None:
    """A sends messages on four streams (one at a time, or ten at once), resets some of them (``close``) and B asks
    it to reset others (``stop``, which drops A's unsent messages there), now and then after a pause (``wait``, up
    to 300 ms); the link loses, reorders and duplicates. B never gets a message twice,
    never out of order on an ordered stream, and never a message of one use of a stream before the reset that
    ended the previous use nor after the reset that ended its own; every message of a use A ended itself
    arrives. Over DATA, and over I-DATA (RFC 8260), where a reset starts both MID counters over."""
    patient = SctpConfig(asocmaxrxt=50, rto_max=3000, intl_enable=idata)  # never to give up the path is tested
    net, na, nb, ca, sb = pair(seed, patient, patient, **{**LOSSY, "loss": 0.0})
    for path in net.paths.values():  # lossy from here on (a handshake at 20% loss can take longer than a test)
        path.loss = loss
    epoch = [0] * 4  # the use of each stream A sends in now
    count: Counter[tuple[int, int]] = Counter()  # messages sent so far in each use
    stopped: set[tuple[int, int]] = set()  # uses that ended by B's request: their unsent messages may be gone
    sent: list[bytes] = []
    todo = list(actions)
    seen_requests = 0
    resume_at = 0.0

    def step() -> None:
        nonlocal seen_requests
        requests = na.of(ca, ev.StreamResetRequested)
        for e in requests[seen_requests:]:  # A's core reset these at B's request: the next messages are a new use
            for sid in e.stream_ids:
                stopped.add((sid, epoch[sid]))
                epoch[sid] += 1
        seen_requests = len(requests)
        nonlocal resume_at
        while todo and net.now >= resume_at:
            kind, sid, n = todo[0]
            if kind in ("send", "burst"):
                for _ in range(10 if kind == "burst" else 1):
                    payload = b"%d:%d:%d:" % (sid, epoch[sid], count[sid, epoch[sid]]) + bytes(n)
                    try:
                        ca.send(sid, payload, unordered=unordered and sid == 3, now=net.now)
                    except SctpError:
                        return  # sndbuf: later (a burst goes on where it stopped)
                    sent.append(payload)
                    count[sid, epoch[sid]] += 1
                    n = max(1, n // 2)
                    todo[0] = (kind, sid, n)
            elif kind == "wait":
                resume_at = net.now + n / 10_000  # up to 300 ms
            elif kind == "close":
                if ca._reconfig.resetting(sid):
                    return  # one reset of a stream at a time: the next waits for this one
                ca.close_stream(sid)
                epoch[sid] += 1
            else:
                sb.request_reset(sid)
            todo.pop(0)

    def done() -> bool:
        return not todo and not ca._reconfig.busy and not sb._reconfig.busy and ca.buffered_amount() == 0

    assert net.run_until(done, 600, on_step=step), (ca.status(), sb.status())
    net.run_for(2.0)
    current = [0] * 4
    last_n: dict[tuple[int, int], int] = {}
    got: list[bytes] = []
    for e in nb.events[sb]:
        if isinstance(e, ev.StreamReset):
            for sid in e.stream_ids:
                current[sid] += 1
        elif isinstance(e, ev.DataReceived):
            sid, use, n = (int(x) for x in e.data.split(b":")[:3])
            assert sid == e.stream_id
            assert use == current[sid], f"message of use {use} delivered during use {current[sid]} of stream {sid}"
            if not e.unordered:
                assert n > last_n.get((sid, use), -1), f"stream {sid} out of order"
                last_n[sid, use] = n
            got.append(e.data)
    counts = Counter(got)
    assert all(c == 1 for c in counts.values()), "a message was delivered twice"
    missing = [m for m in sent if m not in counts and tuple(int(x) for x in m.split(b":")[:2]) not in stopped]
    assert not missing, missing[:5]
