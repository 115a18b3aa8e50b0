"""Data channels on our SCTP association: a ``TransportConnection`` for the behaviour, over DTLS.

It is the SCTP connection (``mux.sctp.connection``) with WebRTC's conventions on top:

* a DATA_CHANNEL_OPEN (DCEP, PPID 50) on a stream is answered with DATA_CHANNEL_ACK, sets the stream's PR-SCTP
  policy (``Association.configure_stream``: ordered or not, at most so many retransmissions or so many ms) and
  reaches the behaviour as ``new_stream`` with the channel's ``label``, ``protocol``, ``ordered``,
  ``max_retransmits`` and ``max_packet_life_time`` in its props;
* each message is ``stream_data`` with its ``ppid`` (51 text, 53 binary; 56 and 57 an empty message, which the
  wire carries as one zero byte) and ``unordered`` in props;
* a send without a ``ppid`` keeps the PPID of what the peer last sent on the channel (text stays text), binary
  on a channel that has said nothing yet; an empty message goes as PPID 56 or 57;
* closing a channel is a stream reset (RE-CONFIG), as ``fin`` is over SCTP;
* ``conn.open_stream()`` opens a channel of ours on an odd stream id (RFC 8832 §6: the DTLS server's), with an
  empty label; datagrams are not offered (a browser has no such thing).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from mux import transport as t
from mux.logs import peer_log
from mux.sctp import events as se
from mux.sctp.association import Association
from mux.sctp.connection import SctpTransportConnection, log
from mux.sctp.state import SctpError
from mux.udp import Address, Driver
from mux.webrtc import dcep

_TEXT = (dcep.PPID_STRING, dcep.PPID_STRING_EMPTY)


class DataChannelConnection(SctpTransportConnection):
    transport_name = "webrtc"

    def __init__(
        self,
        assoc: Association,
        driver: Driver,
        *,
        high_water: int,
        peer: Callable[[], Address],
        on_finished: Callable[[SctpTransportConnection], None] | None = None,
        counters: dict[str, int] | None = None,
        info: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(assoc, driver, high_water=high_water, on_finished=on_finished, counters=counters)
        self._peer = peer
        #: per stream: whether the peer's last message was text (what a send without ``ppid`` goes as)
        self._text: dict[int, bool] = {}
        #: what ``connected`` props and ``stats()['webrtc']`` carry about the session (path, ICE, DTLS)
        self.info = info or {}

    @property
    def peer_address(self) -> Address:
        return tuple(self._peer())

    # -- commands --------------------------------------------------------------------------------

    def send(self, stream_id: int, data: bytes, fin: bool, props: Mapping[str, Any] | None) -> int:
        ppid = props.get("ppid") if props else None
        text = ppid in _TEXT if ppid is not None else self._text.get(stream_id, False)
        if not data:
            if fin:
                return super().send(stream_id, data, fin, props)
            data, ppid = b"\x00", dcep.PPID_STRING_EMPTY if text else dcep.PPID_BINARY_EMPTY
        elif ppid is None:
            ppid = dcep.PPID_STRING if text else dcep.PPID_BINARY
        merged = dict(props) if props else {}
        merged["ppid"] = ppid
        return super().send(stream_id, data, fin, merged)

    def open_stream(self, unidirectional: bool = False) -> int:
        if unidirectional:
            raise t.TransportError("a data channel is bidirectional")
        assoc = self.assoc
        sid = next((s for s in range(1, assoc.outbound_streams, 2) if not assoc.stream_in_use(s)), None)
        if sid is None:
            raise t.TransportError(f"all {assoc.outbound_streams // 2} of our data channel ids are in use")
        opening = dcep.ChannelOpen(dcep.RELIABLE, 0, 0, "", "").encode()
        try:
            assoc.open_stream(sid, expect_peer=True, first=(dcep.PPID_DCEP, opening))
        except SctpError as exc:
            raise t.TransportError(str(exc)) from None
        self._in_epoch[sid] = False
        self.driver.touch(self)
        return sid

    def send_datagram(self, data: bytes) -> None:
        raise t.TransportError("a WebRTC peer takes no datagrams: open an unordered channel without retransmissions")

    def datagram_state(self) -> dict[str, Any]:
        return {"dgram_send_enabled": False, "dgram_max_len": 0}

    def consent_lost(self) -> None:
        """ICE consent expired (RFC 7675): the path is gone, as SCTP's own communication lost would say."""
        if self.finished or self._end is not None:
            return
        self._end = {"by": "transport", "error_code": 0, "reason": "ICE consent expired", "error": "communication_lost"}
        if self.sink is not None:
            self.sink.deliver(t.TransportShutdown(dict(self._end)))
        self.assoc.abort("communication lost: ICE consent expired")
        self.driver.touch(self)

    def stats(self) -> dict[str, Any]:
        stats = super().stats()
        stats["transport"] = "webrtc"
        stats["webrtc"] = dict(self.info)
        return stats

    # -- events ----------------------------------------------------------------------------------

    def handle_event(self, event: Any) -> None:
        kind = type(event)
        if kind is se.DataReceived:
            ppid = event.ppid
            if ppid == dcep.PPID_DCEP:
                self._dcep(event)
                return
            self._text[event.stream_id] = ppid in _TEXT
        elif kind is se.AssociationUp:
            sink = self.sink
            assert sink is not None
            sink.deliver(t.DatagramStateChanged(self.datagram_state()))
            props = {"transport": "webrtc", "peer": self.peer_address, **self.info}
            props.update(outbound_streams=event.outbound_streams, inbound_streams=event.inbound_streams)
            sink.deliver(t.Connected(props))
            sink.deliver(t.StreamsAvailable(self._free_streams(), 0))
            return
        super().handle_event(event)

    def _dcep(self, event: se.DataReceived) -> None:
        assoc, sid, data = self.assoc, event.stream_id, event.data
        assoc.consumed(len(data))
        if not data or data[0] != dcep.OPEN:
            return  # the ACK of a channel we opened, or nothing we know
        try:
            opened = dcep.parse_open(data)
        except dcep.DcepError as exc:
            self._counters["bad_dcep"] = self._counters.get("bad_dcep", 0) + 1
            peer_log(log, "webrtc.dcep", "association %s: %s", self.peer_address, exc)
            return
        if sid in self._in_epoch:
            self._counters["bad_dcep"] = self._counters.get("bad_dcep", 0) + 1
            return  # a channel is open on this stream already
        reliability, param = opened.reliability
        try:
            assoc.configure_stream(sid, ordered=opened.ordered, reliability=reliability, param=param)
            self._in_epoch[sid] = False
            assoc.claim_stream(sid)
            assoc.send(
                sid,
                dcep.ack(),
                ppid=dcep.PPID_DCEP,
                unordered=False,
                reliability="reliable",
                now=self.driver.loop.time(),
            )
        except SctpError as exc:
            peer_log(log, "webrtc.dcep", "association %s: channel %d: %s", self.peer_address, sid, exc)
            return
        sink = self.sink
        assert sink is not None
        sink.deliver(t.StreamData(sid, b"", False, opened.props()))  # new_stream, with the channel's props
        self.driver.touch(self)
