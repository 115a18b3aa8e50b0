"""One SCTP endpoint (esock's model): one UDP socket, one local SCTP port, many associations.

It parses each packet once, finds the association by (peer UDP address, peer SCTP port) and the
verification tag, and answers what has no association without keeping state: INIT gets an INIT-ACK
carrying an HMAC'd cookie, a valid COOKIE-ECHO is offered to ``admit`` (the server's pool) before any
state exists, and other out-of-the-blue packets are handled per RFC 9260 §8.4. Nothing a peer sends
raises out of ``receive_datagram``; what is dropped is counted in ``stats``.

A packet from a new UDP port of a known peer that carries an association's own tag moves the
association there (RFC 6951 §5.4, a NAT rebinding); an index by local tag finds it, so local tags are
unique per endpoint. What a spoofable packet can make us send or keep is bounded: stateless replies
queue at most ``_MAX_STATELESS`` datagrams, and an INIT-ACK reports at most
``MAX_UNRECOGNIZED_REPORT`` bytes of unrecognized parameters.
"""

from __future__ import annotations

import logging
import os
import random
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from mux.logs import limited_log
from mux.sctp import cookie as ck
from mux.sctp import events as ev
from mux.sctp import extensions as ext
from mux.sctp.association import Addr, Association
from mux.sctp.chunks import (
    AbortChunk,
    CookieAckChunk,
    CookieEchoChunk,
    DataChunk,
    ErrorChunk,
    IDataChunk,
    InitAckChunk,
    InitChunk,
    SackChunk,
    ShutdownAckChunk,
    ShutdownChunk,
    ShutdownCompleteChunk,
)
from mux.sctp.config import SctpConfig
from mux.sctp.entropy import ENTROPY
from mux.sctp.packet import (
    EDMID_DTLS,
    ZERO_CHECKSUM_ACCEPTABLE,
    Packet,
    ParseError,
    parse_packet,
    serialize_packet,
    zero_checksum_offered,
)
from mux.sctp.params import (
    STALE_COOKIE,
    CookiePreservativeParam,
    ErrorCause,
    IPv4AddressParam,
    IPv6AddressParam,
    Param,
    StateCookieParam,
    UnknownParam,
    UnrecognizedParam,
    param_action,
    stale_cookie_cause,
)
from mux.sctp.paths import acceptable, address_params
from mux.sctp.state import CLOSED, COOKIE_ECHOED, COOKIE_WAIT, SHUTDOWN_ACK_SENT
from mux.steering import sctp_tag

log = logging.getLogger("mux.sctp")

#: ``admit(addr)``: True creates the association, False answers ABORT, None drops the COOKIE-ECHO
#: silently so the peer retries it (the pool is busy, not full).
Admit = Callable[[Addr], "bool | None"]
_MAX_COOKIE_EXTENSION_MS = 60_000
_HANDSHAKING = (COOKIE_WAIT, COOKIE_ECHOED)
#: stateless replies (INIT-ACK, §8.4 answers) held until the driver drains them: a flood cannot queue more
_MAX_STATELESS = 1024
#: Unrecognized Parameters an INIT-ACK reports, in bytes as sent (each wrapped in its Unrecognized Parameter
#: TLV), whole parameters only. An INIT costs nothing to spoof, so the answer must not grow with it: with this
#: cap an INIT-ACK is at most 376 bytes (12 common header + 20 INIT-ACK + 88 state cookie + 256), one small
#: datagram whatever the INIT, and never more than 3.75 times the INIT (a bare 32-byte INIT's own ratio).
#: An honest peer's reportable extensions take a few dozen bytes, so nothing it needs to learn is lost.
MAX_UNRECOGNIZED_REPORT = 256
#: after following a peer to a new UDP port, packets from its other ports are processed but do not move it
#: again for this long: a packet reordered across the rebinding does not flap the association back, and a
#: peer alternating ports makes at most one ``PeerAddressChanged`` per association per second
PORT_HOLD_DOWN = 1.0


#: first chunks of a packet that an existing association handles alone, whatever its state (_dispatch's rules)
_IN_ASSOCIATION = frozenset((DataChunk, IDataChunk, SackChunk))


def _key(addr: Addr, port: int) -> tuple[Any, ...]:
    return (addr[0], addr[1], port)


class Endpoint:
    def __init__(
        self,
        config: SctpConfig,
        *,
        local_port: int,
        secret: bytes | None = None,
        admit: Admit | None = None,
        rng: random.Random | None = None,
        hold: bool = False,
        listening: bool = True,
        tag_residue: tuple[int, int] | None = None,
        zero_checksum: bool = False,
    ) -> None:
        self.reconfigure(config)
        #: RFC 9653 over DTLS (WebRTC): a packet whose checksum field is zero is taken without checking it, and an
        #: INIT offering the same gets our Zero Checksum Acceptable parameter back. Only where a lower layer
        #: (DTLS) already guarantees integrity: never on plain UDP.
        self.zero_checksum = zero_checksum
        #: new server associations wait for ``Association.proceed`` (the application's new_conn)
        self.hold = hold
        #: False for a client's endpoint: an INIT that starts nothing we know of is refused with a small
        #: ABORT (RFC 9260 §8.4 3) instead of drawing an INIT-ACK and a cookie nobody can ever use
        self.listening = listening
        self.local_port = local_port
        self._secret = secret or os.urandom(32)
        self._admit = admit
        self._rng = rng or ENTROPY
        #: (index, count): our local tags are ``index`` modulo ``count`` (a worker's, see ``mux.steering``)
        self._tag_residue = tag_residue
        self._assocs: dict[tuple[Any, ...], Association] = {}
        #: live associations by their local verification tag (unique per endpoint; see ``_new_tag``)
        self._by_tag: dict[int, Association] = {}
        self._tag_of: dict[Association, int] = {}
        #: when an association last followed its peer to a new UDP port (``PORT_HOLD_DOWN``)
        self._moved_at: dict[Association, float] = {}
        self._out: list[tuple[bytes, Addr]] = []
        self._events: deque[ev.EndpointEvent] = deque()
        self.stats: dict[str, int] = {
            "rx": 0,
            "malformed": 0,
            "bad_crc": 0,
            "wrong_port": 0,
            "bad_vtag": 0,
            "ootb": 0,
            "init": 0,
            "bad_init": 0,
            "bad_cookie": 0,
            "stale_cookie": 0,
            "refused": 0,
            "busy": 0,
            "accepted": 0,
            "restarts": 0,
            "collisions": 0,
            "port_changes": 0,
            "port_changes_held": 0,
            "init_report_capped": 0,
            "stateless_dropped": 0,
        }

    def reconfigure(self, config: SctpConfig) -> None:
        """Options for associations made from now on (a reload); live ones keep the config they were made with."""
        self.config = config
        #: the extensions our INIT-ACKs offer
        self._offered = ext.offered(config.prsctp_enable, config.reconf_enable, config.intl_enable)

    @property
    def associations(self) -> Iterable[Association]:
        return self._assocs.values()

    def next_event(self) -> ev.EndpointEvent | None:
        return self._events.popleft() if self._events else None

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr]]:
        out = self._out
        self._out = []
        return out

    def connect(
        self, addr: Addr, remote_port: int, now: float, *, rtt_hint: tuple[float, float] | None = None
    ) -> Association:
        """Start a client association to ``remote_port`` at UDP address ``addr``; ``rtt_hint`` is (SRTT, RTTVAR)
        in seconds as a recent association to the same peer measured them (see ``Association.connect``)."""
        key = _key(addr, remote_port)
        if key in self._assocs:
            raise ValueError(f"an association to {addr} port {remote_port} already exists")
        assoc = Association(
            self.config, local_port=self.local_port, remote_port=remote_port, peer_addr=addr, rng=self._rng
        )
        if assoc.local_vtag in self._by_tag:
            assoc.local_vtag = self._new_tag()  # before connect: the INIT carries it
        self._assocs[key] = assoc
        self._index(assoc)
        assoc.connect(now, rtt_hint=rtt_hint)
        return assoc

    def remove(self, assoc: Association) -> None:
        for addr in {assoc.peer_addr[:2], *(a[:2] for a in assoc._paths.addresses())}:
            key = _key(addr, assoc.remote_port)
            if self._assocs.get(key) is assoc:
                del self._assocs[key]
        self._unindex(assoc)
        self._moved_at.pop(assoc, None)

    def _new_tag(self) -> int:
        """A local verification tag no live association of ours uses (the key of ``_by_tag``)."""
        residue = self._tag_residue
        if residue is not None:
            tag = sctp_tag(self._rng, *residue)
            while tag in self._by_tag:
                tag = sctp_tag(self._rng, *residue)
            return tag
        tag = self._rng.randrange(1, 1 << 32)
        while tag in self._by_tag:
            tag = self._rng.randrange(1, 1 << 32)
        return tag

    def _index(self, assoc: Association) -> None:
        tag = assoc.local_vtag
        # Two cookies in flight may carry the same tag (each was unique when its INIT-ACK left); the later
        # association then goes unindexed: it works, it only cannot follow a port change.
        if tag not in self._by_tag:
            self._by_tag[tag] = assoc
            self._tag_of[assoc] = tag

    def _index_paths(self, assoc: Association) -> None:
        """Packets from each of the peer's addresses find the association (multi-homing, ``paths``)."""
        assoc._paths.changed = False
        for addr in assoc._paths.addresses():
            self._assocs.setdefault(_key(addr, assoc.remote_port), assoc)

    def _unindex(self, assoc: Association) -> None:
        tag = self._tag_of.pop(assoc, None)
        if tag is not None and self._by_tag.get(tag) is assoc:
            del self._by_tag[tag]

    # -- receive --------------------------------------------------------------------------------------------

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> Association | None:
        """Process one UDP payload; returns the association it went to (for the driver to pump)."""
        stats = self.stats
        stats["rx"] += 1
        try:
            packet = parse_packet(data, check_crc=not (self.zero_checksum and data[8:12] == b"\x00\x00\x00\x00"))
        except ParseError as exc:
            stats["bad_crc" if str(exc) == "bad crc32c" else "malformed"] += 1
            return None
        try:
            chunks = packet.chunks
            if chunks and type(chunks[0]) in _IN_ASSOCIATION and packet.dst_port == self.local_port:
                # the common case, what _dispatch would do with it: a packet for an association we have
                assoc = self._assocs.get((addr[0], addr[1], packet.src_port))
                if assoc is not None and assoc.state != CLOSED:
                    assoc.receive_packet(packet, addr, now)
                    if assoc._paths.changed:
                        self._index_paths(assoc)
                    return assoc
            return self._dispatch(packet, addr, now)
        except Exception as exc:  # a bug of ours must not take the endpoint down with one packet
            stats["malformed"] += 1
            stats["internal_errors"] = stats.get("internal_errors", 0) + 1
            # the traceback is ours to fix, but a peer repeating the packet must not fill the log with it
            limited_log(log, logging.ERROR, "sctp.internal", "sctp packet from %s dropped", addr, exc_info=exc)
            return None

    def _dispatch(self, packet: Packet, addr: Addr, now: float) -> Association | None:
        stats = self.stats
        if packet.dst_port != self.local_port:
            stats["wrong_port"] += 1
            return None
        chunks = packet.chunks
        if not chunks:
            stats["malformed"] += 1
            return None
        assoc = self._assocs.get((addr[0], addr[1], packet.src_port))  # _key, inlined
        first = chunks[0]
        kind = type(first)
        if kind is InitChunk:
            # §8.5.1 A: INIT travels alone with tag 0
            if len(chunks) != 1 or packet.vtag != 0:
                stats["bad_init"] += 1
                return None
            self._on_init(packet, first, addr, assoc, now)  # type: ignore[arg-type]
            return None
        if kind is CookieEchoChunk:
            return self._on_cookie_echo(packet, first, addr, assoc, now)  # type: ignore[arg-type]
        if assoc is None or assoc.state == CLOSED:
            assoc = self._follow(packet, first, addr, now)
        if assoc is None or (kind is ShutdownAckChunk and assoc.state in _HANDSHAKING):
            # §8.5.1 E: a SHUTDOWN-ACK while we handshake is out of the blue whatever its tag; the
            # SHUTDOWN-COMPLETE it draws frees a peer still closing our previous association
            self._ootb(packet, addr)
            return None
        assoc.receive_packet(packet, addr, now)
        if assoc._paths.changed:
            self._index_paths(assoc)
        return assoc

    def _follow(self, packet: Packet, first: Any, addr: Addr, now: float) -> Association | None:
        """The association a packet from an unknown UDP port belongs to, moved there (RFC 6951 §5.4), or None.

        Only a packet that proves itself moves one: the association's own local tag (found by the tag
        index), from the same host and SCTP port. INIT and COOKIE-ECHO never get here, and a T-bit ABORT or
        SHUTDOWN-COMPLETE carries a reflected tag that proves nothing; a SHUTDOWN-ACK while we handshake is
        out of the blue whatever its tag (§8.5.1 E).
        """
        assoc = self._by_tag.get(packet.vtag)
        if assoc is None or assoc.local_vtag != packet.vtag or assoc.state == CLOSED:
            return None
        previous = assoc.peer_addr
        kind = type(first)
        if kind is InitAckChunk and assoc.state == COOKIE_WAIT and assoc.remote_port == packet.src_port:
            # a multi-homed peer may answer our INIT from another of its addresses (usrsctp does): the tag proves
            # the INIT-ACK ours, and the addresses it lists become paths; the INIT's destination stays primary
            return assoc
        if previous[0] != addr[0] or assoc.remote_port != packet.src_port:
            return None
        if (kind is AbortChunk or kind is ShutdownCompleteChunk) and first.t_bit:
            return None
        if kind is ShutdownAckChunk and assoc.state in _HANDSHAKING:
            return None
        moved = self._moved_at.get(assoc)
        if moved is not None and now - moved < PORT_HOLD_DOWN:
            self.stats["port_changes_held"] += 1  # processed where it came from; replies still go to the new port
            return assoc
        old_key = _key(previous, assoc.remote_port)
        if self._assocs.get(old_key) is assoc:
            del self._assocs[old_key]
        assoc.peer_addr = addr
        assoc._paths.primary.addr = addr
        self._assocs[_key(addr, packet.src_port)] = assoc
        self._moved_at[assoc] = now
        self.stats["port_changes"] += 1
        self._events.append(ev.PeerAddressChanged(assoc, tuple(previous)))
        return assoc

    def _reply(self, addr: Addr, src_port: int, vtag: int, chunks: list[Any]) -> None:
        if len(self._out) < _MAX_STATELESS:
            self._out.append((serialize_packet(self.local_port, src_port, vtag, chunks), addr))
        else:
            self.stats["stateless_dropped"] += 1

    def _ootb(self, packet: Packet, addr: Addr) -> None:
        """§8.4: out-of-the-blue packets."""
        self.stats["ootb"] += 1
        for chunk in packet.chunks:
            kind = type(chunk)
            if kind is AbortChunk or kind is ShutdownCompleteChunk or kind is CookieAckChunk:
                return
            if kind is ErrorChunk and any(c.code == STALE_COOKIE for c in chunk.causes):  # type: ignore[union-attr]
                return
            if kind is ShutdownAckChunk:
                self._reply(addr, packet.src_port, packet.vtag, [ShutdownCompleteChunk(t_bit=True)])
                return
        self._reply(addr, packet.src_port, packet.vtag, [AbortChunk(t_bit=True)])

    # -- handshake ------------------------------------------------------------------------------------------

    def _on_init(self, packet: Packet, init: InitChunk, addr: Addr, assoc: Association | None, now: float) -> None:
        stats = self.stats
        stats["init"] += 1
        if init.initiate_tag == 0 or init.num_ostreams == 0 or init.max_instreams == 0:
            stats["bad_init"] += 1  # RFC 9260 §3.3.2: silently discard
            return
        live = assoc is not None and assoc.state != CLOSED
        if not live and not self.listening:
            stats["refused"] += 1  # §8.4 3: the ABORT carries the INIT's tag, T bit clear
            self._reply(addr, packet.src_port, init.initiate_tag, [AbortChunk()])
            return
        unrecognized: list[Param] = []
        listed: list[str] = []  # §5.1.2: the peer's other addresses, for the association the cookie builds
        room = MAX_UNRECOGNIZED_REPORT
        capped = False
        extension_ms = 0
        for param in init.params:
            if type(param) is UnknownParam:
                stop, report = param_action(param.type)
                if report and not capped:
                    # wrapped size: our TLV header around the padded parameter, as it goes on the wire
                    size = 4 + ((4 + len(param.value) + 3) & ~3)
                    if size <= room:
                        unrecognized.append(UnrecognizedParam(param.serialize()))
                        room -= size
                    else:
                        capped = True  # whole parameters, in order: the report is a prefix of what was there
                        stats["init_report_capped"] += 1
                if stop:
                    break
            elif type(param) is CookiePreservativeParam:
                extension_ms = min(param.increment_ms, _MAX_COOKIE_EXTENSION_MS)
            elif (
                (type(param) is IPv4AddressParam or type(param) is IPv6AddressParam)
                and len(listed) < ck.MAX_ADDRESSES
                and param.address != addr[0]
                and acceptable(param.address, addr)
            ):
                listed.append(param.address)
        config = self.config
        tie_local = tie_peer = 0
        if assoc is not None and live:
            if assoc.state == SHUTDOWN_ACK_SENT:
                # §9.2: an INIT while we finish closing gets our SHUTDOWN-ACK again
                self._reply(addr, packet.src_port, assoc.peer_vtag, [ShutdownAckChunk()])
                return
            if assoc.state in (COOKIE_WAIT, COOKIE_ECHOED):
                # §5.2.1: INIT collision; answer with the tag and TSN of our own INIT
                local_tag, local_tsn = assoc.local_vtag, assoc._initial_tsn
                tie_local = assoc.local_vtag
            else:
                # §5.2.2: a peer restarting (or colliding late): new tags, the current ones as tie-tags
                local_tag = self._new_tag()
                local_tsn = self._rng.randrange(0, 1 << 32)
                tie_local, tie_peer = assoc.local_vtag, assoc.peer_vtag
        else:
            local_tag = self._new_tag()
            local_tsn = self._rng.randrange(0, 1 << 32)
        theirs = ext.peer_offers(init.params)
        cookie = ck.Cookie(
            created=now,
            lifetime_ms=config.cookie_life + extension_ms,
            local_tag=local_tag,
            local_tsn=local_tsn,
            peer_tag=init.initiate_tag,
            peer_tsn=init.initial_tsn,
            peer_rwnd=init.a_rwnd,
            peer_os=init.num_ostreams,
            peer_mis=init.max_instreams,
            local_port=self.local_port,
            peer_port=packet.src_port,
            tie_local=tie_local,
            tie_peer=tie_peer,
            features=ext.agree(self._offered, theirs),
            addresses=tuple(listed),
        )
        params: list[Param] = [StateCookieParam(ck.encode(cookie, self._secret, addr))]
        params.extend(address_params(config.local_addresses))
        # our Adaptation Layer Indication only to a peer that sent one: pion before 1.8.13 rejects any INIT-ACK
        # carrying a parameter it does not know, instead of skipping it as its type says (RFC 9260 §3.2.1)
        params.extend(ext.params(self._offered if theirs & ext.MUX else self._offered & ~ext.MUX))
        params.extend(unrecognized)
        if self.zero_checksum and zero_checksum_offered(init.params):
            params.append(UnknownParam(ZERO_CHECKSUM_ACCEPTABLE, EDMID_DTLS.to_bytes(4, "big")))
        ack = InitAckChunk(local_tag, config.recbuf, config.num_ostreams, config.max_instreams, local_tsn, params)
        self._reply(addr, packet.src_port, init.initiate_tag, [ack])

    def _on_cookie_echo(
        self, packet: Packet, echo: CookieEchoChunk, addr: Addr, assoc: Association | None, now: float
    ) -> Association | None:
        stats = self.stats
        cookie = ck.decode(echo.cookie, self._secret, addr)
        if cookie is None or cookie.local_port != self.local_port or cookie.peer_port != packet.src_port:
            stats["bad_cookie"] += 1  # §5.1.5: silently discard
            return None
        if packet.vtag != cookie.local_tag:
            stats["bad_vtag"] += 1  # §8.5.1 B... the tag must be the one our INIT-ACK gave
            return None
        expires = ck.expires_at(cookie)
        if now > expires:
            stats["stale_cookie"] += 1
            staleness_us = int((now - expires) * 1_000_000)
            self._reply(addr, packet.src_port, cookie.peer_tag, [ErrorChunk([stale_cookie_cause(staleness_us)])])
            return None
        rest = packet.chunks[1:]
        if assoc is not None and assoc.state != CLOSED:
            action = assoc.handle_cookie_echo(cookie, now)
            if action == "restart":
                stats["restarts"] += 1
                self._unindex(assoc)
                assoc.restart(cookie, now)
                self._index(assoc)
            elif action == "collision":
                stats["collisions"] += 1
            elif action == "discard":
                return None
            if rest:
                assoc.receive_packet(Packet(packet.src_port, packet.dst_port, assoc.local_vtag, rest), addr, now)
            return assoc
        verdict = self._admit(addr) if self._admit is not None else True
        if verdict is None:
            stats["busy"] += 1  # the peer retransmits its COOKIE-ECHO; by then a slot may be free
            return None
        if not verdict:
            stats["refused"] += 1
            self._reply(addr, packet.src_port, cookie.peer_tag, [AbortChunk([ErrorCause(4, b"")])])
            return None
        if assoc is not None:
            self.remove(assoc)
        assoc = Association.from_cookie(self.config, cookie, peer_addr=addr, now=now, rng=self._rng, hold=self.hold)
        self._assocs[_key(addr, packet.src_port)] = assoc
        self._index(assoc)
        if cookie.addresses:
            assoc._paths.learn(list(cookie.addresses), addr, now)
            self._index_paths(assoc)
        stats["accepted"] += 1
        self._events.append(ev.NewAssociation(assoc))
        if rest:
            assoc.receive_packet(Packet(packet.src_port, packet.dst_port, assoc.local_vtag, rest), addr, now)
        return assoc


__all__ = ["Admit", "Endpoint", "ShutdownChunk"]
