"""One asyncio driver for every sans-IO core: a UDP socket pumped in batches.

A *core* is anything shaped like aioquic's ``QuicConnection``: ``datagrams_to_send(now)``,
``get_timer()``, ``handle_timer(now)`` and ``next_event()``. Our SCTP association has the same
shape, so this one driver serves both transports. The transport-specific part is the *demux*: it
parses each datagram just enough to find (or admit) its core, feeds it, and calls ``touch``.

Per readiness event the driver reads up to ``BATCH`` datagrams straight off the socket and hands
the resulting events to the connections' mailboxes. Sending is deferred by one loop step
(``call_soon``), queued *after* the mailbox wake-ups: a behaviour that answers at once (an echo)
has its reply in the core before we transmit, so the ACK and the answer leave in one packet.
The flush then sends each touched connection's datagrams and re-arms its timer.
Timers are lazy: a handle is only rescheduled when the deadline moves earlier, and an early fire
just re-arms, so a deadline that moves every packet costs no timer churn.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import heapq
import logging
import socket
from collections import deque
from collections.abc import Callable, Sequence
from termios import FIONREAD
from time import monotonic
from typing import TYPE_CHECKING, Any, Protocol

from mux.logs import peer_log

log = logging.getLogger("mux.udp")
ioctl = fcntl.ioctl
NOTHING = bytearray(4)

Address = tuple[Any, ...]
BATCH = 64
RECV_SIZE = 65536
# Socket buffers: the kernel default (~200 KiB) drops bursts on loopback at a few hundred Mbit/s.
SOCKET_BUFFER = 4 * 1024 * 1024
#: a timer firing this close to its deadline counts as on time (libuv timers have 1 ms resolution)
TIMER_SLACK = 0.001
#: deadlines further off than FAR seconds (an idle connection's heartbeat or idle timeout) wait in the driver's wheel
#: of WHEEL_GRAIN-second slots behind one loop timer, and fire up to a grain late: a connection in a slot costs a
#: set entry, where a loop timer costs about 1.4 kB under uvloop, and one wake-up serves a whole slot
FAR = 1.0
WHEEL_GRAIN = 0.05


class Core(Protocol):
    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]: ...

    def get_timer(self) -> float | None: ...

    def handle_timer(self, now: float) -> None: ...

    def next_event(self) -> Any: ...


class DatagramSocket(Protocol):
    """What the driver uses of its socket: a bound UDP socket, or ``mux.sctp.rawip.RawSctpSocket``."""

    @property
    def family(self) -> int: ...

    def recvfrom(self, size: int, /) -> tuple[bytes, Any]: ...

    def sendto(self, data: bytes, addr: Any, /) -> int: ...

    def fileno(self) -> int: ...

    def setblocking(self, flag: bool, /) -> None: ...

    def setsockopt(self, level: int, option: int, value: int, /) -> None: ...

    def getsockname(self) -> Any: ...

    def close(self) -> None: ...


class Pumped:
    """One connection as the driver sees it. Transports subclass it and implement ``handle_event``.

    The defaults below are class attributes; a subclass with ``__slots__`` (no instance dict: an idle connection
    costs less) lists them and sets them in its ``__init__``.
    """

    if not TYPE_CHECKING:  # mypy would take the empty slots for a class that can hold no attributes
        __slots__ = ()

    core: Core
    _timer: asyncio.TimerHandle | None = None
    _timer_at: float | None = None
    #: the driver's wheel slot it waits in, when its deadline is far (``_timer`` is None then)
    _slot: int | None = None
    _dirty: bool = False
    #: set by the transport once the core is terminated; the driver then forgets it
    finished: bool = False
    #: the framework side (``mux.transport.ConnectionSink``); its ``idle`` lets the driver send at once
    sink: Any = None

    def handle_event(self, event: Any) -> None:
        raise NotImplementedError

    def on_finished(self) -> None:
        """The core is done: release what the demux holds for it."""


class Demux(Protocol):
    def datagram_received(self, data: bytes, addr: Address, now: float) -> None: ...

    def flush_stateless(self, driver: Driver) -> None:
        """Send replies the demux made without a core (version negotiation, INIT-ACK...)."""
        ...


class Driver:
    def __init__(
        self,
        sock: DatagramSocket,
        demux: Demux,
        loop: asyncio.AbstractEventLoop | None = None,
        *,
        busy_poll_us: int = 0,
        more: Sequence[DatagramSocket] = (),
    ) -> None:
        self.sock = sock
        #: further sockets, one per local address of a multi-homed SCTP endpoint: read alike; each datagram leaves
        #: by the one whose address the kernel would choose as source towards its destination (``_route``)
        self.more = list(more)
        self._routes: dict[Any, DatagramSocket] = {}
        self.demux = demux
        self.loop = loop or asyncio.get_running_loop()
        self._dirty: list[Pumped] = []
        self._flush_scheduled = False
        self._reading = False
        self._out: deque[tuple[bytes, Address]] = deque()
        self._writer_on = False
        self._closed = False
        self._busy_poll = busy_poll_us / 1e6
        self._awake_until = 0.0
        self._polling = False
        #: delivering the events of a read that found one datagram: a callback's reply may leave at once (``reply_now``)
        self._one = False
        #: far deadlines (``FAR``): connections by slot (a deadline rounded up to ``WHEEL_GRAIN``), the slots in a
        #: heap, and the one loop timer for the earliest
        self._wheel: dict[int, set[Pumped]] = {}
        self._slots: list[int] = []
        self._wheel_timer: asyncio.TimerHandle | None = None
        self._wheel_at = 0
        self.counters = {"rx": 0, "tx": 0, "tx_dropped": 0, "rx_errors": 0}
        for each in (sock, *self.more):
            each.setblocking(False)
            for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                try:
                    each.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)
                except OSError:
                    pass
        self._fileno = sock.fileno()
        self._pending = bytearray(4)
        self.loop.add_reader(self._fileno, self._read_ready)
        for each in self.more:
            self.loop.add_reader(each.fileno(), self._read_ready, each)

    @property
    def local_address(self) -> Address:
        return tuple(self.sock.getsockname())

    @property
    def busy_poll_us(self) -> int:
        return round(self._busy_poll * 1e6)

    @busy_poll_us.setter
    def busy_poll_us(self, value: int) -> None:
        self._busy_poll = value / 1e6

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not self.loop.is_closed():  # a closed loop has forgotten its readers already
            self.loop.remove_reader(self._fileno)
            for each in self.more:
                self.loop.remove_reader(each.fileno())
            if self._writer_on:
                self.loop.remove_writer(self._fileno)
        self.sock.close()
        for each in self.more:
            each.close()

    # -- receive --------------------------------------------------------------------------------

    def _read_ready(self, sock: DatagramSocket | None = None) -> None:
        if sock is None:
            recvfrom = self.sock.recvfrom
            fileno = self._fileno
        else:
            recvfrom = sock.recvfrom
            fileno = sock.fileno()
        received = self.demux.datagram_received
        now = self.loop.time()
        count = 0
        pending = self._pending
        self._reading = True
        for _ in range(BATCH):
            try:
                data, addr = recvfrom(RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:  # e.g. ICMP-reported errors; nothing to do with one datagram
                self.counters["rx_errors"] += 1
                peer_log(log, "udp.recvfrom", "recvfrom: %s", exc)
                break
            count += 1
            received(data, addr, now)
            if count == 1:
                # One datagram is the request/response case: ask the kernel whether another waits
                # (SIOCINQ: the next datagram's size) rather than pay a failing recvfrom and its
                # exception on the round trip. A zero-length datagram reads as none; the reader is
                # level-triggered, so it wakes us again for it.
                try:
                    ioctl(fileno, FIONREAD, pending, True)
                except OSError:  # the socket was closed under us
                    break
                if pending == NOTHING:
                    break
        self._reading = False
        self.counters["rx"] += count
        if self._busy_poll and count:
            self._awake_until = monotonic() + self._busy_poll
            if not self._polling:
                self._polling = True
                self.loop.call_soon(self._stay_awake)
        settled = True
        self._one = count == 1
        try:
            for pumped in self._dirty:
                self._deliver(pumped)
                sink = pumped.sink
                if sink is not None and not sink.idle:  # an attribute: this runs per connection per batch
                    settled = False
        finally:
            self._one = False
        if settled:
            # every callback the events caused has already run (eagerly): nothing can join the
            # packets by waiting a loop step, so send now and save the step
            self.flush()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self.flush)
        else:
            self.demux.flush_stateless(self)

    def _stay_awake(self) -> None:
        """Busy polling: a ready callback keeps the loop's own poll at a zero timeout, so a datagram
        arriving now is read on the next step instead of after a sleep and a wake-up."""
        if monotonic() < self._awake_until and not self._closed:
            self.loop.call_soon(self._stay_awake)
        else:
            self._polling = False

    # -- pumping -------------------------------------------------------------------------------

    def touch(self, pumped: Pumped) -> None:
        """Mark a connection as needing a flush (new commands, or fed a datagram)."""
        if not pumped._dirty:
            pumped._dirty = True
            self._dirty.append(pumped)
            if not self._flush_scheduled and not self._reading:
                self._flush_scheduled = True
                self.loop.call_soon(self.flush)

    def flush_one(self, pumped: Pumped) -> None:
        """Send a connection's datagrams now (its behaviour finished a batch of callbacks)."""
        if pumped._dirty and not self._reading:
            pumped._dirty = False
            self._pump(pumped, self.loop.time())

    def reply_now(self, pumped: Pumped) -> None:
        """A callback for the last event of the one datagram just read has returned: send what it queued now, before
        the bookkeeping after it and the rest of the read (request/response: the reply is the round trip)."""
        if self._one:
            self.flush_one(pumped)

    def flush(self) -> None:
        self._flush_scheduled = False
        now = self.loop.time()
        dirty = self._dirty
        while dirty:
            self._dirty = []
            for pumped in dirty:
                if pumped._dirty:  # not already flushed by flush_one
                    pumped._dirty = False
                    self._pump(pumped, now)
            dirty = self._dirty
        self.demux.flush_stateless(self)

    @staticmethod
    def _deliver(pumped: Pumped) -> None:
        core = pumped.core
        handle = pumped.handle_event
        event = core.next_event()
        while event is not None:
            handle(event)
            event = core.next_event()

    def _pump(self, pumped: Pumped, now: float) -> None:
        core = pumped.core
        self._deliver(pumped)
        send = self.sendto
        for data, addr in core.datagrams_to_send(now):
            send(data, addr)
        self._deliver(pumped)
        if pumped.finished:
            self._disarm(pumped)
            pumped.on_finished()
            return
        self._arm(pumped, core.get_timer())

    def _disarm(self, pumped: Pumped) -> None:
        if pumped._timer is not None:
            pumped._timer.cancel()
            pumped._timer = None
        slot = pumped._slot
        if slot is not None:
            pumped._slot = None
            waiting = self._wheel.get(slot)
            if waiting is not None:
                waiting.discard(pumped)
        pumped._timer_at = None

    def _arm(self, pumped: Pumped, at: float | None) -> None:
        if at is None:
            self._disarm(pumped)
            return
        current = pumped._timer_at
        if current is not None and current <= at:
            return  # what is armed fires no later than needed; it re-arms then
        self._disarm(pumped)
        pumped._timer_at = at
        loop = self.loop
        if at - loop.time() <= FAR:
            pumped._timer = loop.call_at(at, self._fire, pumped)
            return
        slot = -int(-at // WHEEL_GRAIN)  # rounded up: a slot fires at or after each deadline in it
        pumped._slot = slot
        waiting = self._wheel.get(slot)
        if waiting is None:
            waiting = self._wheel[slot] = set()
            heapq.heappush(self._slots, slot)
            if self._wheel_timer is None or slot < self._wheel_at:
                self._arm_wheel(slot)
        waiting.add(pumped)

    def _arm_wheel(self, slot: int) -> None:
        if self._wheel_timer is not None:
            self._wheel_timer.cancel()
        self._wheel_at = slot
        self._wheel_timer = self.loop.call_at(slot * WHEEL_GRAIN, self._turn_wheel)

    def _turn_wheel(self) -> None:
        """Fire every slot that is due (the timer may fire a little early: ``TIMER_SLACK``), then wait for the next."""
        self._wheel_timer = None
        slots, wheel = self._slots, self._wheel
        due = (self.loop.time() + TIMER_SLACK) / WHEEL_GRAIN
        while slots and slots[0] <= due:
            for pumped in wheel.pop(heapq.heappop(slots), ()):
                pumped._slot = None
                try:
                    self._fire(pumped)
                except Exception as exc:  # as the loop does for a timer of its own: the others in the slot still fire
                    self.loop.call_exception_handler({"message": "a connection's timer failed", "exception": exc})
        if slots:
            self._arm_wheel(slots[0])

    def _fire(self, pumped: Pumped) -> None:
        pumped._timer = None
        pumped._timer_at = None
        core = pumped.core
        now = self.loop.time()
        at = core.get_timer()
        if at is None or at > now + TIMER_SLACK:
            self._arm(pumped, at)  # the deadline moved later since we armed: nothing to do yet
            return
        # The loop's timers are millisecond-grained (libuv) and may fire a little early: count a deadline
        # within the slack as reached, or the core does nothing and the same sub-millisecond timer spins
        # (aioquic's own protocol does the same with max(timer_at, now)).
        now = max(at, now)
        core.handle_timer(now)
        self._pump(pumped, now)

    # -- send -----------------------------------------------------------------------------------

    def _route(self, addr: Address) -> DatagramSocket:
        """The socket bound to the address the kernel would send from towards ``addr`` (the first by default)."""
        known = self._routes.get(addr[0])
        if known is not None:
            return known
        sock: DatagramSocket = self.sock
        try:
            with socket.socket(self.more[0].family, socket.SOCK_DGRAM) as probe:
                probe.connect((addr[0], 9))
                source = probe.getsockname()[0]
            sock = next((s for s in (self.sock, *self.more) if s.getsockname()[0] == source), self.sock)
        except OSError:
            pass
        if len(self._routes) >= 4096:  # bounded: peers come and go
            self._routes.clear()
        self._routes[addr[0]] = sock
        return sock

    def sendto(self, data: bytes, addr: Address) -> None:
        if self._out:
            self._queue(data, addr)
            return
        try:
            (self._route(addr) if self.more else self.sock).sendto(data, addr)
            self.counters["tx"] += 1
        except (BlockingIOError, InterruptedError):
            self._queue(data, addr)
        except OSError as exc:
            # A datagram is best-effort; the protocol's own recovery deals with a lost one.
            self.counters["tx_dropped"] += 1
            if exc.errno not in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH):
                peer_log(log, "udp.sendto", "sendto %s: %s", addr, exc)

    def _queue(self, data: bytes, addr: Address) -> None:
        if len(self._out) >= 4096:  # the protocol will retransmit; don't hold unbounded memory
            self.counters["tx_dropped"] += 1
            return
        self._out.append((data, addr))
        if not self._writer_on and not self._closed:
            self._writer_on = True
            self.loop.add_writer(self._fileno, self._write_ready)

    def _write_ready(self) -> None:
        out = self._out
        while out:
            data, addr = out[0]
            try:
                (self._route(addr) if self.more else self.sock).sendto(data, addr)
                self.counters["tx"] += 1
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.counters["tx_dropped"] += 1
            out.popleft()
        self._writer_on = False
        self.loop.remove_writer(self._fileno)


def open_socket(host: str, port: int) -> socket.socket:
    """A bound non-blocking UDP socket for ``host`` (IPv4 or IPv6 literal or name)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE)
    family, _, _, _, sockaddr = infos[0]
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(sockaddr)
    except OSError:
        sock.close()
        raise
    return sock


def resolve(host: str, port: int) -> Address:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    return tuple(infos[0][4])


Callback = Callable[[], None]
