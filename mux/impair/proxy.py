"""Asyncio UDP proxy that impairs traffic between clients and one upstream server (our stand-in for netem).

Each client address gets its own connected upstream socket, so the server sees one peer per client and replies find
their way back. All clients share one model per direction, like one bottleneck link: "up" (client -> server) and
"down" (server -> client). Sockets are drained in batches from ``add_reader`` callbacks (asyncio's datagram
transports read one datagram per wake-up, too slow for benchmarks), and one ``call_at`` timer on the earliest
deadline releases everything due in one go.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import Any, cast

from mux.impair.model import Impairment, ImpairModel, ImpairStats

Address = tuple[str, int]

#: datagrams read per wake-up before yielding to the loop, so one busy socket cannot starve the rest
READ_BATCH = 256
MAX_DATAGRAM = 65535


def parse_address(text: str, default_host: str = "127.0.0.1") -> Address:
    """``HOST:PORT``, ``[V6]:PORT`` or ``:PORT`` (``default_host``); raises ValueError with what is wrong."""
    host, sep, port_text = text.strip().rpartition(":")
    if not sep:
        raise ValueError(f"{text!r}: expected HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"{text!r}: write an IPv6 address in brackets, e.g. [::1]:4433")
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"{text!r}: port {port_text!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"{text!r}: port {port} is out of range 0-65535")
    return (host or default_host, port)


@dataclass(slots=True)
class ProxyStats:
    """A snapshot of the proxy's counters."""

    up: ImpairStats
    down: ImpairStats
    clients: int = 0
    clients_opened: int = 0
    clients_expired: int = 0
    clients_evicted: int = 0
    #: released by a model but not sent: the kernel buffer was full or the send failed
    send_failed: int = 0
    #: released after their client mapping had been closed
    orphaned: int = 0
    #: receive errors (e.g. ICMP port unreachable reported on an upstream socket)
    recv_errors: int = 0
    #: datagrams waiting in each direction's model
    held_up: int = 0
    held_down: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(eq=False, slots=True)
class _Client:
    addr: Any
    sock: socket.socket
    last_seen: float
    closed: bool = False


class ImpairProxy:
    """``async with ImpairProxy(listen, upstream, up=..., down=..., seed=...) as proxy``; ``proxy.address`` is bound.

    ``idle_timeout`` (seconds, None = never) closes client mappings with no traffic either way; at
    ``max_clients`` mappings a new client evicts the least recently active one.
    """

    def __init__(
        self,
        listen: Address | str,
        upstream: Address | str,
        *,
        up: Impairment | None = None,
        down: Impairment | None = None,
        seed: int = 0,
        idle_timeout: float | None = 60.0,
        max_clients: int = 1024,
        socket_buffer: int = 1 << 21,
    ) -> None:
        if max_clients < 1:
            raise ValueError("max_clients must be >= 1")
        if idle_timeout is not None and idle_timeout <= 0:
            raise ValueError("idle_timeout must be > 0 or None")
        self._listen = parse_address(listen, "0.0.0.0") if isinstance(listen, str) else listen
        self._upstream = parse_address(upstream) if isinstance(upstream, str) else upstream
        self.up_settings = up if up is not None else Impairment()
        self.down_settings = down if down is not None else Impairment()
        # distinct, reproducible streams per direction
        self._up = ImpairModel(self.up_settings, seed * 2)
        self._down = ImpairModel(self.down_settings, seed * 2 + 1)
        self._idle_timeout = idle_timeout
        self._max_clients = max_clients
        self._socket_buffer = socket_buffer
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sock: socket.socket | None = None
        self._upstream_addr: Any = None
        self._upstream_family = socket.AF_INET
        self._clients: OrderedDict[Any, _Client] = OrderedDict()  # least recently active first
        self._timer: asyncio.TimerHandle | None = None
        self._timer_when = 0.0
        self._sweeper: asyncio.TimerHandle | None = None
        self._counts = ProxyStats(up=self._up.stats, down=self._down.stats)
        self.address: Address = ("", 0)

    def set_mtu(self, mtu: int | None) -> None:
        """Change the path's MTU (bytes of UDP payload, both directions) from now on: a route that shrinks."""
        for model in (self._up, self._down):
            model.settings = dataclasses.replace(model.settings, mtu=mtu)
        self.up_settings, self.down_settings = self._up.settings, self._down.settings

    async def __aenter__(self) -> ImpairProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        up_info = await loop.getaddrinfo(*self._upstream, type=socket.SOCK_DGRAM)
        family, _, _, _, self._upstream_addr = up_info[0]
        self._upstream_family = socket.AddressFamily(family)
        infos = await loop.getaddrinfo(*self._listen, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE)
        lfamily, _, _, _, laddr = infos[0]
        sock = self._new_socket(lfamily)
        try:
            sock.bind(laddr)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        self.address = cast(Address, tuple(sock.getsockname()[:2]))
        loop.add_reader(sock.fileno(), self._on_client_readable)
        if self._idle_timeout is not None:
            self._sweeper = loop.call_later(self._sweep_interval(), self._sweep)

    def close(self) -> None:
        """Stop: close every socket and forget held datagrams. Safe to call twice."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for client in list(self._clients.values()):
            self._close_client(client)
        self._clients.clear()
        if self._sock is not None and self._loop is not None:
            self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
        self._up.clear()
        self._down.clear()

    def stats(self) -> ProxyStats:
        counts = self._counts
        return ProxyStats(
            up=self._up.stats.snapshot(),
            down=self._down.stats.snapshot(),
            clients=len(self._clients),
            clients_opened=counts.clients_opened,
            clients_expired=counts.clients_expired,
            clients_evicted=counts.clients_evicted,
            send_failed=counts.send_failed,
            orphaned=counts.orphaned,
            recv_errors=counts.recv_errors,
            held_up=len(self._up),
            held_down=len(self._down),
        )

    # -- sockets -------------------------------------------------------------------------------------------------

    def _new_socket(self, family: int) -> socket.socket:
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.setblocking(False)
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            try:
                sock.setsockopt(socket.SOL_SOCKET, option, self._socket_buffer)
            except OSError:
                pass  # the kernel's limit applies then
        return sock

    def _open_client(self, addr: Any, now: float) -> _Client | None:
        assert self._loop is not None
        while len(self._clients) >= self._max_clients:
            _, oldest = self._clients.popitem(last=False)
            self._close_client(oldest)
            self._counts.clients_evicted += 1
        try:
            sock = self._new_socket(self._upstream_family)
        except OSError:  # out of file descriptors: this client's datagrams are lost until one frees up
            self._counts.send_failed += 1
            return None
        try:
            sock.connect(self._upstream_addr)
        except OSError:
            sock.close()
            self._counts.send_failed += 1
            return None
        client = _Client(addr, sock, now)
        self._clients[addr] = client
        self._counts.clients_opened += 1
        self._loop.add_reader(sock.fileno(), self._on_upstream_readable, client)
        return client

    def _close_client(self, client: _Client) -> None:
        if client.closed:
            return
        client.closed = True
        if self._loop is not None:
            self._loop.remove_reader(client.sock.fileno())
        client.sock.close()

    def _on_client_readable(self) -> None:
        sock = self._sock
        if sock is None or self._loop is None:
            return
        now = self._loop.time()
        clients = self._clients
        submit = self._up.submit
        for _ in range(READ_BATCH):
            try:
                data, addr = sock.recvfrom(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self._counts.recv_errors += 1
                continue
            client = clients.get(addr)
            if client is None:
                client = self._open_client(addr, now)
                if client is None:
                    continue
            else:
                clients.move_to_end(addr)
            client.last_seen = now
            submit(data, now, client)
        self._release(now)

    def _on_upstream_readable(self, client: _Client) -> None:
        if client.closed or self._loop is None:
            return
        now = self._loop.time()
        submit = self._down.submit
        received = False
        for _ in range(READ_BATCH):
            try:
                data = client.sock.recv(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self._counts.recv_errors += 1
                continue
            submit(data, now, client)
            received = True
        if received:
            client.last_seen = now
            if self._clients.get(client.addr) is client:
                self._clients.move_to_end(client.addr)
        self._release(now)

    # -- timers --------------------------------------------------------------------------------------------------

    def _release(self, now: float) -> None:
        """Send everything due, then arm the timer for the next deadline."""
        counts = self._counts
        for data, tag in self._up.due_tagged(now):
            client = cast(_Client, tag)
            if client.closed:
                counts.orphaned += 1
                continue
            try:
                client.sock.send(data)
            except OSError:  # full buffer (BlockingIOError) or refused: the network lost it
                counts.send_failed += 1
        sock = self._sock
        for data, tag in self._down.due_tagged(now):
            client = cast(_Client, tag)
            if sock is None or client.closed:
                counts.orphaned += 1
                continue
            try:
                sock.sendto(data, client.addr)
            except OSError:
                counts.send_failed += 1
        self._arm_timer()

    def _arm_timer(self) -> None:
        up, down = self._up.next_deadline(), self._down.next_deadline()
        deadline = up if down is None else down if up is None else min(up, down)
        if deadline is None or self._loop is None:
            return
        if self._timer is not None:
            if self._timer_when <= deadline:
                return  # the armed timer fires first and re-arms
            self._timer.cancel()
        self._timer_when = deadline
        self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self._loop is not None:
            # the loop may run a handle a clock tick early; never spin on a deadline it considers reached
            self._release(max(self._loop.time(), self._timer_when))

    def _sweep_interval(self) -> float:
        assert self._idle_timeout is not None
        return min(max(self._idle_timeout / 4, 0.01), 5.0)

    def _sweep(self) -> None:
        if self._loop is None or self._idle_timeout is None:
            return
        cutoff = self._loop.time() - self._idle_timeout
        clients = self._clients
        while clients:
            addr, client = next(iter(clients.items()))
            if client.last_seen > cutoff:
                break
            del clients[addr]
            self._close_client(client)
            self._counts.clients_expired += 1
        self._sweeper = self._loop.call_later(self._sweep_interval(), self._sweep)
