"""An association's handshake (RFC 9260 §5): INIT and COOKIE-ECHO with their retransmission timer T1, a stale cookie
(§5.2.6), and a COOKIE-ECHO for an association that exists already (§5.2.4: a duplicate, an INIT collision, or
the peer's restart).

The server side never runs the first half: the endpoint answers INIT statelessly and builds the association from a
valid COOKIE-ECHO (``Association.from_cookie``). This part works on the association it belongs to, which owns the
state, the timers and the transmission control block; it keeps what only the handshake needs (the packets to
retransmit, the attempts, T1's backed-off timeout).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mux.sctp import cookie as ck
from mux.sctp import events as ev
from mux.sctp import extensions as ext
from mux.sctp import reconfig as rc
from mux.sctp.chunks import CookieAckChunk, CookieEchoChunk, ErrorChunk, InitAckChunk, InitChunk, ShutdownAckChunk
from mux.sctp.packet import serialize_packet
from mux.sctp.params import (
    STALE_COOKIE,
    CookiePreservativeParam,
    ErrorCause,
    IPv4AddressParam,
    IPv6AddressParam,
    StateCookieParam,
    UnknownParam,
    cookie_while_shutting_down_cause,
    missing_param_cause,
    param_action,
    protocol_violation_cause,
    unrecognized_params_cause,
)
from mux.sctp.paths import address_params
from mux.sctp.rx.tracker import DataTracker
from mux.sctp.state import CLOSED, COOKIE_ECHOED, COOKIE_WAIT, ESTABLISHED, SHUTDOWN_ACK_SENT, SctpError
from mux.sctp.tx.congestion import Congestion

if TYPE_CHECKING:
    from mux.sctp.association import Association


#: the shortest T1 for a COOKIE-ECHO (seconds): above an event loop's timer jitter, so a healthy exchange on a
#: fast path is not resent
COOKIE_T1_FLOOR = 0.010


#: INITs sent with our Adaptation Layer Indication before the rest go without it
MUX_INIT_ATTEMPTS = 2


class Handshake:
    __slots__ = (
        "a",
        "cookie_echo",
        "cookie_echo_sent_at",
        "cookie_preservative_ms",
        "echo_attempts",
        "hinted",
        "init_attempts",
        "init_packet",
        "init_sent_at",
        "quick",
        "t1_rto",
    )

    def __init__(self, assoc: Association) -> None:
        self.a = assoc
        self.t1_rto = assoc.config.rto_initial / 1000.0
        self.init_attempts = 0  # INITs sent, stale-cookie restarts included (§5.2.6)
        self.echo_attempts = 0  # COOKIE-ECHOs sent
        self.init_packet = b""
        self.cookie_echo = b""
        self.cookie_echo_sent_at: float | None = None
        self.init_sent_at = 0.0
        self.hinted = False  # the first T1-init came from a recent association's RTT
        self.quick = 0  # retransmissions of the current INIT or COOKIE-ECHO below the RFC's floor (see on_t1)
        self.cookie_preservative_ms = 0

    def connect(self, now: float, rtt_hint: tuple[float, float] | None = None) -> None:
        a = self.a
        if a.state != CLOSED:
            raise SctpError(f"connect in state {a.state}")
        a.state = COOKIE_WAIT
        self.init_attempts = 0
        self.t1_rto = a.config.rto_initial / 1000.0
        self.hinted = rtt_hint is not None
        self.quick = 0
        if rtt_hint is not None:
            # prior knowledge of the path (RFC 8961 §4 asks for RTO.Initial only without it): the first T1 from
            # what a recent association measured, as for T1-cookie below; then doubling from RTO.Min, as an RTO
            # computed from a measurement would be
            srtt, rttvar = rtt_hint
            self.t1_rto = min(max(srtt + 4 * rttvar, COOKIE_T1_FLOOR), self.t1_rto)
        self._send_init(now)

    def _build_init(self) -> bytes:
        a = self.a
        c = a.config
        params: list[Any] = ext.params(a._offered)
        params.extend(address_params(c.local_addresses))
        if self.cookie_preservative_ms:
            params.append(CookiePreservativeParam(self.cookie_preservative_ms))
        init = InitChunk(a.local_vtag, c.recbuf, c.num_ostreams, c.max_instreams, a._initial_tsn, params)
        return serialize_packet(a.local_port, a.remote_port, 0, [init])

    def _send_init(self, now: float) -> None:
        a = self.a
        self.init_packet = self._build_init()
        a._raw.append(self.init_packet)
        self.init_attempts += 1
        self.init_sent_at = now
        a._t1 = now + self.t1_rto

    def on_init_ack(self, chunk: InitAckChunk, now: float) -> None:
        a = self.a
        if a.state != COOKIE_WAIT:
            return  # §5.2.3: an INIT-ACK in any other state is discarded
        cookie: bytes | None = None
        unrecognized: list[bytes] = []
        listed: list[str] = []
        for param in chunk.params:
            if type(param) is StateCookieParam:
                cookie = param.cookie
            elif type(param) is IPv4AddressParam or type(param) is IPv6AddressParam:
                listed.append(param.address)
            elif type(param) is UnknownParam:
                stop, report = param_action(param.type)
                if report:
                    unrecognized.append(param.serialize())
                if stop:
                    break
        if chunk.initiate_tag == 0 or chunk.num_ostreams == 0 or chunk.max_instreams == 0:
            a._abort_with(protocol_violation_cause(b"invalid INIT-ACK"), "peer sent an invalid INIT-ACK")
            return
        if cookie is None:
            a._abort_with(missing_param_cause([StateCookieParam.TYPE]), "INIT-ACK without a state cookie")
            return
        config = a.config
        a.peer_vtag = chunk.initiate_tag
        a._rx = DataTracker(chunk.initial_tsn - 1)
        a._peer_initial_tsn = chunk.initial_tsn
        a._peer_arwnd = chunk.a_rwnd
        a.outbound_streams = min(config.num_ostreams, chunk.max_instreams)
        a.inbound_streams = min(config.max_instreams, chunk.num_ostreams)
        a.features = ext.agree(a._offered, ext.peer_offers(chunk.params))
        if listed:
            a._paths.learn(listed, a.peer_addr, now)
        self.cookie_echo = CookieEchoChunk(cookie).serialize()
        a._ctrl.append(self.cookie_echo)
        if unrecognized:
            a._ctrl.append(ErrorChunk([unrecognized_params_cause(b"".join(unrecognized))]).serialize())
        a.state = COOKIE_ECHOED
        self.echo_attempts = 1
        self.quick = 0
        if self.init_attempts == 1:  # a first RTT sample, from an INIT sent once (Karn)
            rtt = a._rtt
            rtt.sample(now - self.init_sent_at)
            assert rtt.srtt is not None
            # T1-cookie from that sample alone, without RTO.Min: a COOKIE-ECHO is one small packet the peer keeps
            # no state for until it comes, so resending it early costs one packet and no congestion window, as
            # QUIC's handshake probes (RFC 9002 §6.2) go by the measured RTT without a fixed minimum
            self.t1_rto = max(rtt.srtt + 4 * rtt.rttvar, COOKIE_T1_FLOOR)
        elif not self.hinted or a._rtt.srtt is not None:
            self.t1_rto = a._rtt.rto
        # else: no clean sample (the INIT went more than once), but a hint timed it: T1-cookie goes on from T1-init
        a._t1 = now + self.t1_rto
        self.cookie_echo_sent_at = now

    def on_cookie_ack(self, now: float) -> None:
        a = self.a
        if a.state != COOKIE_ECHOED:
            return
        if self.cookie_echo_sent_at is not None and self.echo_attempts == 1:
            a._rtt.sample(now - self.cookie_echo_sent_at)
        a._t1 = None
        a._establish(now)

    def on_t1(self, now: float) -> None:
        a = self.a
        if a.state not in (COOKIE_WAIT, COOKIE_ECHOED):
            return
        waiting = a.state == COOKIE_WAIT
        attempts = self.init_attempts if waiting else self.echo_attempts
        if attempts - self.quick >= a.config.max_attempts:
            what = "INIT" if waiting else "COOKIE-ECHO"
            a._finish(ev.AssociationAborted(f"no answer to {what} after {attempts} attempts"))
            return
        # doubled (§6.3.3 E2). A T1 taken from a measured RTT doubles from there, as QUIC's handshake probes do
        # (one small packet the peer keeps no state for): those quick retransmissions, below what the RFC would
        # wait (RTO.Min-bounded RTO with a measurement, RTO.Initial without), do not count against max_attempts,
        # so a path that got slower still gets the RFC's patience once the timer has grown to that floor
        floor = (a.config.rto_min if self.hinted else a.config.rto_initial) / 1000.0 if waiting else a._rtt.rto
        doubled = self.t1_rto * 2
        if doubled < floor:
            self.quick += 1
        self.t1_rto = min(doubled, a.config.max_init_timeo / 1000.0)
        if waiting:
            if attempts == MUX_INIT_ATTEMPTS and a._offered & ext.MUX:
                # two INITs went unanswered: the peer may be one that drops an INIT for a parameter it does not
                # know (pion before 1.8.13), so the rest go without our Adaptation Layer Indication
                a._offered &= ~ext.MUX
                self.init_packet = self._build_init()
            a._raw.append(self.init_packet)
            self.init_attempts += 1
        else:
            a._ctrl.append(self.cookie_echo)
            self.echo_attempts += 1
        a._t1 = now + self.t1_rto

    def on_stale_cookie(self, causes: list[ErrorCause], now: float) -> bool:
        """§5.2.6: start over with a Cookie Preservative asking for the lifetime we were short of. False when the
        ERROR is not about a stale cookie of ours."""
        a = self.a
        stale = next((c for c in causes if c.code == STALE_COOKIE), None) if a.state == COOKIE_ECHOED else None
        if stale is None:
            return False
        staleness_us = int.from_bytes(stale.info[:4], "big") if len(stale.info) >= 4 else 0
        if self.init_attempts >= a.config.max_attempts:
            a._finish(ev.AssociationAborted("stale cookie", list(causes)))
            return True
        self.cookie_preservative_ms = min(2 * (staleness_us // 1000 + 1), 3_600_000)
        a.state = COOKIE_WAIT
        a.peer_vtag = 0
        self.t1_rto = a.config.rto_initial / 1000.0
        self._send_init(now)
        return True

    def on_cookie_echo(self, cookie: ck.Cookie, now: float) -> str:
        a = self.a
        local_match = cookie.local_tag == a.local_vtag
        peer_match = cookie.peer_tag == a.peer_vtag
        if not local_match and not peer_match:
            if cookie.tie_local == a.local_vtag and cookie.tie_peer == a.peer_vtag:
                if a.state == SHUTDOWN_ACK_SENT:
                    # the peer restarted while we were closing: finish the close first (§5.2.4 A)
                    a._ctrl.append(ShutdownAckChunk().serialize())
                    a._ctrl.append(ErrorChunk([cookie_while_shutting_down_cause()]).serialize())
                    return "shutting-down"
                return "restart"
            return "discard"
        if local_match and not peer_match:  # B: INIT collision
            a.peer_vtag = cookie.peer_tag
            a._rx = DataTracker(cookie.peer_tsn - 1)
            a._peer_initial_tsn = cookie.peer_tsn
            a._peer_arwnd = cookie.peer_rwnd
            a.outbound_streams = min(a.config.num_ostreams, cookie.peer_mis)
            a.inbound_streams = min(a.config.max_instreams, cookie.peer_os)
            a.features = cookie.features
            a._ctrl.append(CookieAckChunk().serialize())
            if a.state in (COOKIE_WAIT, COOKIE_ECHOED):
                a._establish(now)
            else:
                a._adopt_features()
            return "collision"
        if not local_match and peer_match:  # C: a late cookie from an earlier collision
            return "discard"
        # D: both tags match: a duplicate or retransmitted COOKIE-ECHO
        if not a._on_hold:  # a held association sends its COOKIE-ACK on proceed
            a._ctrl.append(CookieAckChunk().serialize())
        if a.state in (COOKIE_WAIT, COOKIE_ECHOED):
            a._t1 = None
            a._establish(now)
        return "duplicate"

    def restart(self, cookie: ck.Cookie, now: float) -> None:
        a = self.a
        lost = a.buffered_amount()
        a._reasm.reset(a.inbound_streams)  # held data (deferred resets) included: it is charged there
        a._cc = a._paths.primary.cc = Congestion(a._mtu)
        a._t3 = a._t2 = a._t5 = a._t_sack = None
        a._load_cookie(cookie)  # a new Outstanding under the new initial TSN
        a._ctrl.append(CookieAckChunk().serialize())
        a.stats["restarts"] = a.stats.get("restarts", 0) + 1
        a.stats["restart_lost_bytes"] = a.stats.get("restart_lost_bytes", 0) + lost
        a.state = ESTABLISHED
        a._queue.clear(a.outbound_streams)
        a._adopt_features()  # the restarted peer may offer other extensions
        a._reasm.set_streams(a.inbound_streams)
        # stream reconfiguration starts over with the new TSNs; what was held is gone with the rest
        a._reconfig = rc.Reconfig(a._initial_tsn, a._peer_initial_tsn)
        a._streams.clear()
        a._events.append(ev.AssociationRestarted(a.outbound_streams, a.inbound_streams))
        if a.config.hbinterval:
            a._t_hb = a._heartbeat.due(now, a._rtt.rto)
