"""An SCTP client association on its own socket: UDP (an ephemeral port unless configured), or with
``encapsulation: none`` a raw IP socket of its own SCTP port (``mux.sctp.rawip``, random unless configured).

The socket outlives an association that ended with our SHUTDOWN, as a kernel stack's port does. We sent the last
packet, the SHUTDOWN-COMPLETE; if it is lost, the peer retransmits its SHUTDOWN-ACK on its T2 timer (one RTO, then
doubling) and must get a SHUTDOWN-COMPLETE with the T bit (RFC 9260 §8.4 item 5) to end its side: pion retransmits
forever, usrsctp until its retry limit. So the endpoint stays on the socket, answering out of the blue only, until
it has heard nothing for ``LINGER`` seconds, or for three times the time since the close while retransmissions keep
coming (the peer's T2 doubles), and never longer than ``LINGER_MAX``. The user's view of the close does not wait for
it. A lingering socket belongs to a task: ``asyncio.run`` (or any ``asyncio.Runner``) ending cancels it and so
closes the socket at once, and at most ``MAX_LINGERING`` linger per event loop (the oldest goes first).
"""

from __future__ import annotations

import asyncio
import atexit
import errno
import random
import socket
from collections.abc import Awaitable, Callable

from mux.pmtud import interface_mtu
from mux.sctp import events as se
from mux.sctp.association import Association
from mux.sctp.connection import SctpTransportConnection
from mux.sctp.endpoint import Endpoint
from mux.sctp.listener import address_changed
from mux.sctp.options import SctpClientOptions, core_config, host_list
from mux.sctp.peer_rtts import PeerRtts
from mux.sctp.rawip import PortTaken, RawSctpSocket, open_raw
from mux.transport import SinkFactory
from mux.udp import Address, DatagramSocket, Driver, resolve

#: the UDP port a URL without one gets (the plugin's default_port, RFC 6951's 9899)
DEFAULT_UDP_PORT = 9899
#: what this process's client associations measured to each peer host: times the next INIT to it
PEER_RTTS = PeerRtts()
#: seconds a client socket stays after our SHUTDOWN ended its association, counted from the close and from each
#: datagram heard since. A peer retransmits its SHUTDOWN-ACK after one RTO: at least 1 s (RTO.Min of RFC 9260,
#: Linux, usrsctp, pion) and 3 s (RTO.Initial) when it measured no RTT, so 4 s hears the first retransmission of
#: any peer on an ordinary path, and the second one (at +3 s) of a peer at RTO.Min.
LINGER = 4.0
#: ... and never longer than this after the close, however long the peer goes on: a T2 at RTO.Min retransmits at
#: +1, +3, +7, +15 s, so our SHUTDOWN-COMPLETE and three answers may be lost in a row
LINGER_MAX = 30.0
#: lingering client sockets per event loop at most; a new one closes the oldest (the bench opens 40 in a row)
MAX_LINGERING = 64
#: every lingering socket's driver, oldest first, and the task that closes it
_LINGERING: dict[Driver, asyncio.Task[None]] = {}


class _ClientDemux:
    """The client's demux: an endpoint with one association; strays get §8.4 answers."""

    conn: SctpTransportConnection

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint

    def datagram_received(self, data: bytes, addr: Address, now: float) -> None:
        endpoint = self.endpoint
        assoc = endpoint.receive_datagram(data, addr, now)
        if endpoint._events:  # only PeerAddressChanged: a client endpoint admits nothing
            event = endpoint.next_event()
            while event is not None:
                if type(event) is se.PeerAddressChanged and event.association is self.conn.assoc:
                    address_changed(self.conn)
                event = endpoint.next_event()
        if assoc is not None and assoc is self.conn.assoc:
            self.conn.driver.touch(self.conn)

    def flush_stateless(self, driver: Driver) -> None:
        for data, addr in self.endpoint.datagrams_to_send(driver.loop.time()):
            driver.sendto(data, addr)


class _LingeringDemux:
    """A client socket's demux once its association is gone: the endpoint answers out of the blue (§8.4), and
    each datagram heard keeps the socket a while longer (see ``LINGER``)."""

    def __init__(self, endpoint: Endpoint, now: float) -> None:
        self.endpoint = endpoint
        self.since = now
        self.until = now + LINGER

    def datagram_received(self, data: bytes, addr: Address, now: float) -> None:
        endpoint = self.endpoint
        endpoint.receive_datagram(data, addr, now)
        while endpoint.next_event() is not None:  # nothing of ours is alive to move or to admit
            pass
        # A peer still closing: its T2 doubles, so its next try comes at most twice the time since the close from
        # now (its RTO is at most that time). Three times that leaves room for the path and a late timer.
        stay = now + max(LINGER, 3.0 * (now - self.since))
        self.until = min(max(self.until, stay), self.since + LINGER_MAX)

    def flush_stateless(self, driver: Driver) -> None:
        for data, addr in self.endpoint.datagrams_to_send(driver.loop.time()):
            driver.sendto(data, addr)


def _linger(driver: Driver, endpoint: Endpoint) -> None:
    """Keep ``driver``'s socket answering for ``endpoint`` after its association ended (see the module docstring)."""
    loop = driver.loop
    for other in list(_LINGERING):
        if other.loop.is_closed():  # a loop closed without cancelling its tasks: its sockets can only be closed
            _stop_lingering(other)
    mine = [other for other in _LINGERING if other.loop is loop]
    for other in mine[: max(0, len(mine) - MAX_LINGERING + 1)]:
        _stop_lingering(other)
    demux = _LingeringDemux(endpoint, loop.time())
    driver.demux = demux
    task = loop.create_task(_linger_until(driver, demux), name=f"sctp linger {driver.local_address}")
    # a loop closed with the task pending drops it unrun: the socket is closed all the same (the coroutine's
    # ``finally`` when it is collected, the next ``_linger`` or at exit), so there is nothing to warn about
    task._log_destroy_pending = False  # type: ignore[attr-defined]
    _LINGERING[driver] = task


def _stop_lingering(driver: Driver) -> None:
    task = _LINGERING.pop(driver)
    if not driver.loop.is_closed():
        task.cancel()
    driver.close()


def _free_lingering_port(family: int, port: int, raw: bool = False) -> bool:
    """Close this loop's lingering socket on UDP ``port`` (``raw``: on SCTP port ``port`` on IP), so a new client
    may bind it; True if there was one."""
    loop = asyncio.get_running_loop()
    for driver in list(_LINGERING):
        sock = driver.sock
        if (
            (driver.loop is loop or driver.loop.is_closed())
            and isinstance(sock, RawSctpSocket) == raw
            and sock.family == family
            and sock.getsockname()[1] == port
        ):
            _stop_lingering(driver)
            return True
    return False


async def _linger_until(driver: Driver, demux: _LingeringDemux) -> None:
    loop = driver.loop
    try:
        while (left := demux.until - loop.time()) > 0:
            await asyncio.sleep(left)
    finally:
        _LINGERING.pop(driver, None)
        driver.close()


@atexit.register
def _close_lingering() -> None:
    """The process ends: whatever still lingers (a loop never closed, or closed without cancelling) goes now."""
    while _LINGERING:
        driver, _task = _LINGERING.popitem()
        try:
            driver.close()
        except Exception:  # e.g. its loop runs on in another thread: the socket goes anyway
            driver.sock.close()


def _udp_socket(family: int, local_host: str, local_udp_port: int) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        try:
            sock.bind((local_host, local_udp_port))
        except OSError as exc:
            # the port configured is still held by a previous connection's lingering socket: the new one has it
            if exc.errno != errno.EADDRINUSE or not _free_lingering_port(family, local_udp_port):
                raise
            sock.bind((local_host, local_udp_port))
    except OSError:
        sock.close()
        raise
    return sock


def _raw_socket(family: int, local_host: str, local_sctp_port: int) -> RawSctpSocket:
    try:
        return open_raw(local_host, local_sctp_port)
    except PortTaken:
        # the SCTP port configured is still held by a previous connection's lingering socket: the new one has it
        if not local_sctp_port or not _free_lingering_port(family, local_sctp_port, raw=True):
            raise
        return open_raw(local_host, local_sctp_port)


async def connect(
    options: SctpClientOptions, host: str, port: int, make_sink: SinkFactory
) -> tuple[SctpTransportConnection, Callable[[], Awaitable[None]]]:
    """``port`` is the server's UDP port; with ``encapsulation: none`` there is none (only ``sctp_port``), so a
    port other than the default (9899, what a URL without one gets) is refused rather than silently ignored."""
    loop = asyncio.get_running_loop()
    native = options.encapsulation == "none"
    if native and port != DEFAULT_UDP_PORT:
        raise ValueError(
            f"port {port}: SCTP directly on IP (encapsulation=none) has no UDP port; give the server's SCTP port "
            "as sctp_port (e.g. sctp://host?encapsulation=none&sctp_port=7)"
        )
    if native and options.local_udp_port:
        raise ValueError("local_udp_port: SCTP directly on IP (encapsulation=none) has no UDP port")
    local_hosts = host_list(options.local_host)
    # on IP the peer's address is (IP, SCTP port), as the raw socket reports its packets' sources
    addr = await loop.run_in_executor(None, resolve, host, options.sctp_port if native else port)
    family = socket.AF_INET6 if len(addr) == 4 else socket.AF_INET
    local_host = local_hosts[0] if local_hosts else ("::" if family == socket.AF_INET6 else "0.0.0.0")
    sock: DatagramSocket
    more: list[DatagramSocket] = []
    if native:
        raw = _raw_socket(family, local_host, options.local_sctp_port)
        local_port = raw.port
        sock = raw
        try:  # multi-homed on IP: a raw socket per further address, on the port reserved once
            more.extend(open_raw(other, local_port, claimed=True) for other in local_hosts[1:])
        except OSError:
            for r in (raw, *more):
                r.close()
            raise
    else:
        sock = _udp_socket(family, local_host, options.local_udp_port)
        try:
            for other in local_hosts[1:]:  # multi-homed: each address on the same UDP port
                extra = socket.socket(family, socket.SOCK_DGRAM)
                more.append(extra)
                extra.bind((other, sock.getsockname()[1]))
        except OSError:
            for s in (sock, *more):
                s.close()
            raise
        local_port = options.local_sctp_port or random.randrange(49152, 65536)
    endpoint = Endpoint(
        core_config(options, local_hosts), local_port=local_port, admit=lambda _addr: False, listening=False
    )
    demux = _ClientDemux(endpoint)
    driver = Driver(sock, demux, loop, busy_poll_us=options.busy_poll_us, more=more)
    host = addr[0]
    assoc: Association = endpoint.connect(
        addr, options.sctp_port, loop.time(), rtt_hint=PEER_RTTS.lookup(host, loop.time())
    )
    if assoc._pmtud_max:
        assoc.set_interface_mtu(interface_mtu(addr))

    released = False

    def finished(conn: SctpTransportConnection) -> None:
        rtt = conn.assoc.rtt
        PEER_RTTS.remember(host, rtt.srtt, rtt.rttvar, loop.time())
        endpoint.remove(conn.assoc)
        if conn.ended_by_our_shutdown and LINGER > 0 and not released:
            _linger(driver, endpoint)  # our SHUTDOWN-COMPLETE may be lost: answer the peer's SHUTDOWN-ACK again

    conn = SctpTransportConnection(
        assoc, driver, high_water=options.sndbuf // 2, on_finished=finished, counters=endpoint.stats
    )
    demux.conn = conn
    conn.sink = make_sink(conn)
    driver.touch(conn)

    async def release() -> None:
        """The application is done with the connection: the socket goes, unless it lingers (it closes itself)."""
        nonlocal released
        released = True
        if driver not in _LINGERING:
            driver.close()

    return conn, release
