"""The ``webrtc`` listener: one UDP socket for ICE, DTLS and SCTP, and HTTP signalling on the same port number.

Each answered offer is a *session*: ICE-lite credentials, a handshake (DTLS), and once that is done the SCTP
association the behaviour's connection runs on. Datagrams are told apart by their first byte (RFC 7983: 0-3
STUN, 20-63 DTLS) and by their source address. A datagram from an address no session knows is only ever answered
when it is a STUN Binding request carrying a session's credentials (USERNAME and MESSAGE-INTEGRITY): a stranger
can learn nothing and make us send nothing else.

All sessions share one SCTP endpoint (``mux.sctp.endpoint``), which sees each session's plaintext packets as if
they came from the address the session's SCTP started from; ``_SealingDriver`` sends what the endpoint and the
associations produce through their session's DTLS instead of straight to the socket. Admission: the pool is asked
at the offer (``503`` when it refuses or is busy) and again at the SCTP COOKIE-ECHO, as for any SCTP peer.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Callable
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from mux.logs import limited_log
from mux.pool import AcceptorPool, Admission
from mux.sctp import events as se
from mux.sctp.association import Association
from mux.sctp.chunks import InitChunk
from mux.sctp.connection import SctpTransportConnection
from mux.sctp.endpoint import Endpoint
from mux.sctp.options import core_config
from mux.sctp.packet import ParseError, parse_packet, zero_checksum_offered
from mux.udp import Address, Driver, open_socket
from mux.webrtc import sdp, stun
from mux.webrtc.channels import DataChannelConnection
from mux.webrtc.dtls import Certificate, make_context
from mux.webrtc.ice import username_ufrag
from mux.webrtc.options import WebRtcListenerOptions, WebTransportLink
from mux.webrtc.session import Session
from mux.webrtc.signalling import MAX_HEAD, PAGE, Request, Response, serve

log = logging.getLogger("mux.webrtc")
#: the SCTP port both ends use over DTLS (every browser offers 5000)
SCTP_PORT = 5000


class _SealingDriver(Driver):
    """The UDP driver, sending what SCTP makes through its session's DTLS (``Session.seal``)."""

    listener: WebRtcListener

    def sendto(self, data: bytes, addr: Address) -> None:
        session = self.listener.by_sctp_addr.get(addr)
        if session is not None:
            session.seal(data)

    def send_raw(self, data: bytes, addr: Address) -> None:
        Driver.sendto(self, data, addr)


class WebRtcListener:
    transport_name = "webrtc"

    def __init__(self, options: WebRtcListenerOptions, pool: AcceptorPool) -> None:
        self.options = options
        self.pool = pool
        self.name = options.name or f"webrtc:{options.port}"
        self.certificate = Certificate.generate()
        self.context = make_context(self.certificate)
        self.driver: _SealingDriver | None = None
        self.http: asyncio.Server | None = None
        self.endpoint = Endpoint(
            core_config(options, [options.host]),
            local_port=SCTP_PORT,
            admit=self._admit,
            hold=True,
            zero_checksum=options.zero_checksum,
        )
        self.sessions: dict[str, Session] = {}
        self.by_ufrag: dict[str, Session] = {}
        self.by_addr: dict[Address, Session] = {}
        self.by_sctp_addr: dict[Address, Session] = {}
        self._conns: dict[Association, Session] = {}
        self.counters: dict[str, int] = dict.fromkeys(
            ("offers", "bad_offers", "stun_unknown", "stun_bad", "dropped", "handshake_failed", "consent_expired"), 0
        )
        self._sweeper: asyncio.TimerHandle | None = None
        self._page = PAGE
        if options.page:
            with open(options.page, "rb") as f:
                self._page = f.read()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        assert self.driver is not None
        return self.driver.loop

    @property
    def address(self) -> Address:
        assert self.driver is not None
        return self.driver.local_address

    @property
    def fingerprint(self) -> str:
        return self.certificate.fingerprint

    async def start(self) -> None:
        opts = self.options
        for attempt in range(8):
            sock = open_socket(opts.host, opts.port)
            port = sock.getsockname()[1]
            try:
                self.http = await asyncio.start_server(
                    serve(self._request), opts.host, port, reuse_address=True, limit=MAX_HEAD
                )
                break
            except OSError:
                sock.close()
                if opts.port or attempt == 7:
                    raise
                # port 0: the UDP port the kernel chose is taken on TCP; another one will do
        self.driver = _SealingDriver(sock, self, busy_poll_us=opts.busy_poll_us)
        self.driver.listener = self
        self._sweeper = self.loop.call_later(1.0, self._sweep)
        log.info(
            "listener %s: WebRTC on UDP %s, signalling on http://%s:%d/", self.name, self.address[:2], opts.host, port
        )

    def reconfigure(self, options: WebRtcListenerOptions) -> Callable[[], None]:
        """New options for sessions offered from now on (a reload): read the new page now, and return what applies
        them. Live sessions keep what they were made with."""
        config = core_config(options, [options.host])
        page = PAGE
        if options.page:
            with open(options.page, "rb") as f:
                page = f.read()

        def commit() -> None:
            self.options = options
            self._page = page
            self.endpoint.reconfigure(config)
            self.endpoint.zero_checksum = options.zero_checksum
            if self.driver is not None:
                self.driver.busy_poll_us = options.busy_poll_us

        return commit

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for session in list(self.sessions.values()):
            session.close()
        if self.http is not None:
            self.http.close()
        if self.driver is not None:
            self.driver.close()

    def send_raw(self, data: bytes, addr: Address) -> None:
        if self.driver is not None:
            self.driver.send_raw(data, addr)

    # -- signalling -----------------------------------------------------------------------------

    async def _request(self, request: Request) -> Response:
        method, path = request.method, request.path
        if method == "OPTIONS":
            return Response(204)
        if method in ("GET", "HEAD"):
            if path.split("?")[0] == "/":
                return Response(200, self._page, {"content-type": "text/html; charset=utf-8"})
            if path == "/webtransport.json" and self.options.webtransport is not None:
                return self._webtransport_link(self.options.webtransport)
            return Response(404, b"not found\n")
        if method == "DELETE":
            session = self.sessions.get(path.rsplit("/", 1)[-1]) if path.startswith("/session/") else None
            if session is None:
                return Response(404, b"no such session\n")
            self.end(session)
            return Response(200)
        if method != "POST":
            return Response(405, b"POST an SDP offer, DELETE a session\n", {"allow": "GET, POST, DELETE, OPTIONS"})
        if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/sdp":
            return Response(415, b"expected content-type: application/sdp\n")
        try:
            offer = sdp.parse_offer(request.body.decode("utf-8", "replace"))
        except sdp.SdpError as exc:
            self.counters["bad_offers"] += 1
            return Response(400, f"{exc}\n".encode())
        if len(self.sessions) >= self.options.max_pending_sessions + len(self._conns):
            return Response(503, b"too many sessions\n")
        if self.pool.admit(self.name) is not Admission.ACCEPT:
            return Response(503, b"not accepting connections now\n", {"retry-after": "1"})
        props = {
            "path": path,
            "origin": request.headers.get("origin"),
            "headers": request.headers,
            "signalling_peer": request.peer,
        }
        session = Session(self, offer, props, self.loop.time())
        self.counters["offers"] += 1
        self.sessions[session.id] = session
        self.by_ufrag[session.ice.local_ufrag] = session
        host = self.options.host if self.options.host not in ("0.0.0.0", "::") else request.local[0]
        answer = sdp.answer(
            offer,
            ufrag=session.ice.local_ufrag,
            pwd=session.ice.local_pwd,
            fingerprint=self.fingerprint,
            host=host,
            port=self.address[1],
            max_message_size=self.options.recbuf // 4,  # what we take in one message: well inside our window
        )
        headers = {"content-type": "application/sdp", "location": f"/session/{session.id}", "etag": f'"{session.id}"'}
        return Response(201, answer.encode(), headers)

    @staticmethod
    def _webtransport_link(link: WebTransportLink) -> Response:
        """The WebTransport URL and its certificate's hash (read afresh: a renewed certificate shows at once)."""
        try:
            with open(link.certfile, "rb") as f:
                cert = x509.load_pem_x509_certificate(f.read())
        except (OSError, ValueError) as exc:
            return Response(503, f"webtransport certificate: {exc}\n".encode())
        digest = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).digest()
        body = json.dumps({"url": link.url, "hash": list(digest)}).encode()
        return Response(200, body, {"content-type": "application/json"})

    # -- datagrams ------------------------------------------------------------------------------

    def datagram_received(self, data: bytes, addr: Address, now: float) -> None:
        try:
            self._datagram(data, addr, now)
        except Exception as exc:  # a bug of ours must not take the listener down with one datagram
            self.counters["internal_errors"] = self.counters.get("internal_errors", 0) + 1
            limited_log(log, logging.ERROR, "webrtc.internal", "webrtc datagram from %s dropped", addr, exc_info=exc)

    def _datagram(self, data: bytes, addr: Address, now: float) -> None:
        if not data:
            return
        first = data[0]
        if first < 4:
            self._stun(data, addr, now)
            return
        session = self.by_addr.get(addr)
        if session is None or session.failed:
            self.counters["dropped"] += 1
            return
        channel = session.channel
        if channel is None:
            if 20 <= first <= 63:
                session.handshake_datagram(data)
            else:
                self.counters["dropped"] += 1
            return
        if session.sctp_addr is None:
            session.sctp_addr = addr
            self.by_sctp_addr[addr] = session
        packets, replies = channel.open(data)
        for reply in replies:
            self.send_raw(reply, session.remote)
        for packet in packets:
            self._sctp(session, packet, now)

    def _stun(self, data: bytes, addr: Address, now: float) -> None:
        msg = stun.parse(data)
        if msg is None or msg.type != stun.BINDING_REQUEST:
            self.counters["stun_bad"] += 1  # responses and indications: a lite agent sends no requests
            return
        session = self.by_addr.get(addr)
        if session is None or session.ice.local_ufrag != username_ufrag(msg):
            session = self.by_ufrag.get(username_ufrag(msg) or "")
        if session is None:
            self.counters["stun_unknown"] += 1
            return
        if not session.ice.valid(msg):
            self.counters["stun_bad"] += 1
            return
        self.send_raw(session.ice.on_check(msg, addr, now), addr)
        if addr in session.ice.checked:
            self.by_addr.setdefault(addr, session)
        session.path_ready()

    def _sctp(self, session: Session, packet: bytes, now: float) -> None:
        if self.options.zero_checksum and not session.zero_checksum and len(packet) > 12 and packet[12] == 1:
            try:
                init = parse_packet(packet).chunks[0]
            except (ParseError, IndexError):
                init = None
            session.zero_checksum = isinstance(init, InitChunk) and zero_checksum_offered(init.params)

        endpoint = self.endpoint
        assert session.sctp_addr is not None
        assoc = endpoint.receive_datagram(packet, session.sctp_addr, now)
        event = endpoint.next_event()
        while event is not None:
            if type(event) is se.NewAssociation:
                self._new_association(event.association)
            event = endpoint.next_event()
        if assoc is not None and session.conn is not None and session.conn.assoc is assoc:
            assert self.driver is not None
            self.driver.touch(session.conn)

    def _admit(self, addr: Address) -> bool | None:
        verdict = self.pool.admit(self.name)
        if verdict is Admission.BUSY:
            return None
        return verdict is Admission.ACCEPT

    def _new_association(self, assoc: Association) -> None:
        assert self.driver is not None
        session = self.by_sctp_addr.get(tuple(assoc.peer_addr))
        if session is None or session.conn is not None:
            assoc.abort("no session")
            return
        conn = DataChannelConnection(
            assoc,
            self.driver,
            high_water=self.options.sndbuf // 2,
            peer=lambda: session.remote,
            on_finished=self._finished,
            counters=self.endpoint.stats,
            info=session.info(),
        )
        session.conn = conn
        self._conns[assoc] = session
        props: dict[str, Any] = {"transport": "webrtc", "peer": session.remote, "listener": self.name, **session.info()}
        conn.sink = self.pool.accept(self.name, conn, props)
        self.driver.touch(conn)

    def _finished(self, conn: SctpTransportConnection) -> None:
        session = self._conns.pop(conn.assoc, None)
        self.endpoint.remove(conn.assoc)
        if session is not None:
            self.forget(session)

    # -- lifetimes ------------------------------------------------------------------------------

    def end(self, session: Session) -> None:
        """DELETE: close the connection gracefully, or forget a session that has none yet."""
        conn = session.conn
        if conn is not None and not conn.finished:
            conn.close(0, "session deleted")
        else:
            self.forget(session)

    def forget(self, session: Session) -> None:
        session.close()
        self.sessions.pop(session.id, None)
        if self.by_ufrag.get(session.ice.local_ufrag) is session:
            del self.by_ufrag[session.ice.local_ufrag]
        for table in (self.by_addr, self.by_sctp_addr):
            for addr in [a for a, s in table.items() if s is session]:
                del table[addr]

    def _sweep(self) -> None:
        """Once a second: consent freshness, and sessions that never came up."""
        now = self.loop.time()
        consent = self.options.consent_timeout_ms / 1000
        pending = self.options.session_timeout_ms / 1000
        for session in list(self.sessions.values()):
            conn = session.conn
            if session.ice.consent_expired(now, consent) or (
                session.ice.selected is None and now - session.created > consent
            ):
                self.counters["consent_expired"] += 1
                if conn is not None and not conn.finished:
                    conn.consent_lost()
                else:
                    self.forget(session)
            elif conn is None and now - session.created > pending:
                self.forget(session)
        self._sweeper = self.loop.call_later(1.0, self._sweep)

    def flush_stateless(self, driver: Driver) -> None:
        for data, addr in self.endpoint.datagrams_to_send(driver.loop.time()):
            driver.sendto(data, addr)

    @property
    def stats(self) -> dict[str, int]:
        return {**self.counters, **self.endpoint.stats, "sessions": len(self.sessions)}
