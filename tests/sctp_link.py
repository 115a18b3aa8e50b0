"""An in-memory network for the sans-IO SCTP core: endpoints joined by seeded lossy links and a simulated clock.

Nothing here sleeps or opens a socket. ``Network.run_until`` delivers datagrams in arrival-time order and fires
association timers when they fall due, so a whole transfer over a lossy path takes milliseconds of real time and
is the same on every run for a given seed. ``RawPeer`` is a hand-driven peer built from the codec, for sending
what a well-behaved stack never would.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from mux.sctp import events as ev
from mux.sctp.association import Association
from mux.sctp.chunks import (
    Chunk,
    CookieAckChunk,
    CookieEchoChunk,
    DataChunk,
    IDataChunk,
    InitAckChunk,
    InitChunk,
)
from mux.sctp.config import SctpConfig
from mux.sctp.endpoint import Endpoint
from mux.sctp.packet import Packet, parse_packet, serialize_packet
from mux.sctp.params import Param, StateCookieParam

Addr = tuple[str, int]
#: what an intercept decides for one datagram: None = the path's usual fate, False = drop, a list = deliver one
#: copy after each of these delays (exactly, bypassing loss)
Verdict = bool | list[float] | None


@dataclass(slots=True)
class Path:
    """One direction of a link. ``mtu`` is the IP MTU: a datagram with its UDP and IPv4 headers above it is lost.

    ``rate`` (bytes per second, UDP and IPv4 headers counted) makes it a bottleneck: datagrams leave one after the
    other, each taking its size over the rate, queued in order behind those not yet gone; ``delay`` then applies.
    ``queue`` bounds that queue (datagrams waiting, drop-tail, counted in ``Network.tail_drops``); None: unbounded.
    Without ``rate`` every datagram leaves at once.
    """

    loss: float = 0.0
    delay: float = 0.01
    reorder: float = 0.0
    reorder_delay: float = 0.03
    dup: float = 0.0
    mtu: int | None = None
    rate: float | None = None
    queue: int | None = None
    #: with ``rate``: when the link has finished sending what was queued on it, and when each queued datagram leaves
    free_at: float = 0.0
    departures: list[float] = field(default_factory=list)


@dataclass(slots=True)
class Sent:
    """One datagram handed to the network (whatever then happened to it)."""

    time: float
    src: Addr
    dst: Addr
    data: bytes
    copies: int = 0  # how many copies were scheduled for delivery

    def packet(self) -> Packet:
        return parse_packet(self.data)

    def chunks(self) -> list[Chunk]:
        return parse_packet(self.data).chunks


@dataclass
class Node:
    """One UDP address with its Endpoint; events are collected per association as the network runs."""

    net: Network
    addr: Addr
    endpoint: Endpoint
    auto_remove: bool = True
    #: the application reads each message as it arrives (``Association.consumed``); False models one that never does
    consume: bool = True
    events: dict[Association, list[ev.Event]] = field(default_factory=dict)
    #: (time, association, event) in the order the core reported them
    log: list[tuple[float, Association, ev.Event]] = field(default_factory=list)
    new_associations: list[Association] = field(default_factory=list)
    received: list[tuple[float, Addr, bytes]] = field(default_factory=list)
    #: further addresses of a multi-homed node (``Network.alias``)
    aliases: list[Addr] = field(default_factory=list)

    def source_for(self, dst: Addr) -> Addr:
        """The address a datagram to ``dst`` leaves from: a multi-homed node routes by /24, as the kernel would
        with one interface per subnet."""
        if self.aliases:
            net = str(dst[0]).rsplit(".", 1)[0]
            for a in (self.addr, *self.aliases):
                if str(a[0]).rsplit(".", 1)[0] == net:
                    return a
        return self.addr

    def connect(self, peer: Node) -> Association:
        assoc = self.endpoint.connect(peer.addr, peer.endpoint.local_port, self.net.now)
        self.events.setdefault(assoc, [])
        return assoc

    def track(self, assoc: Association) -> None:
        self.events.setdefault(assoc, [])

    def of(self, assoc: Association, kind: type[Any]) -> list[Any]:
        return [e for e in self.events.get(assoc, []) if isinstance(e, kind)]

    def assoc(self) -> Association:
        """The single association of this node (handshake tests)."""
        live = list(self.endpoint.associations)
        assert len(live) == 1, live
        return live[0]

    def all_events(self, kind: type[Any]) -> list[Any]:
        return [e for _t, _a, e in self.log if isinstance(e, kind)]

    def closed(self, assoc: Association) -> bool:
        return any(isinstance(e, ev.AssociationClosed) for e in self.events.get(assoc, []))

    def up(self, assoc: Association) -> bool:
        return any(isinstance(e, ev.AssociationUp) for e in self.events.get(assoc, []))


class Network:
    def __init__(self, seed: int = 0, *, start: float = 1000.0, **path: Any) -> None:
        self.rng = random.Random(seed)
        self.seed = seed
        self.now = start
        self.default = Path(**path)
        self.paths: dict[tuple[Addr, Addr], Path] = {}
        self.nodes: dict[Addr, Node] = {}
        self.sent: list[Sent] = []
        self.intercept: Callable[[Sent], Verdict] | None = None
        self.oversize = 0
        self.tail_drops = 0
        self._queue: list[tuple[float, int, Addr, Addr, bytes]] = []
        self._seq = 0
        self._calls: list[tuple[float, int, Callable[[], None]]] = []
        self.iterations = 0

    # -- topology ------------------------------------------------------------------------------------------

    def add(
        self,
        addr: Addr,
        config: SctpConfig | None = None,
        *,
        port: int = 5000,
        admit: Callable[[Addr], bool | None] | None = None,
        secret: bytes | None = None,
        rng_seed: int | None = None,
        hold: bool = False,
        rng: random.Random | None = None,
    ) -> Node:
        """A new endpoint at ``addr``; it replaces whatever was there (a rebooted host)."""
        seed = rng_seed if rng_seed is not None else self.rng.randrange(1 << 30)
        endpoint = Endpoint(
            config or SctpConfig(),
            local_port=port,
            secret=secret or random.Random(seed).randbytes(32),
            admit=admit,
            rng=rng or random.Random(seed),
            hold=hold,
        )
        node = Node(self, addr, endpoint)
        self.nodes[addr] = node
        return node

    def alias(self, node: Node, addr: Addr) -> None:
        """``addr`` is another address of ``node`` (multi-homing): datagrams to it reach the same endpoint."""
        node.aliases.append(addr)
        self.nodes[addr] = node

    def path(self, src: Addr, dst: Addr) -> Path:
        """The path from ``src`` to ``dst``, created from the defaults on first use so it can be tuned."""
        p = self.paths.get((src, dst))
        if p is None:
            d = self.default
            p = Path(d.loss, d.delay, d.reorder, d.reorder_delay, d.dup, d.mtu, d.rate, d.queue)
            self.paths[(src, dst)] = p
        return p

    def cut(self, a: Addr, b: Addr) -> None:
        self.path(a, b).loss = 1.0
        self.path(b, a).loss = 1.0

    # -- datagrams -----------------------------------------------------------------------------------------

    def inject(self, src: Addr, dst: Addr, data: bytes, delay: float = 0.0) -> None:
        """Schedule a datagram outside any endpoint (a hand-made or replayed packet); not logged in ``sent``."""
        self._schedule(self.now + delay, src, dst, data)

    def at(self, when: float, fn: Callable[[], None]) -> None:
        """Run ``fn`` (an application action: connect, send, close) at simulated time ``when``."""
        self._seq += 1
        heapq.heappush(self._calls, (when, self._seq, fn))

    def _schedule(self, at: float, src: Addr, dst: Addr, data: bytes) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (at, self._seq, src, dst, data))

    def _emit(self, src: Addr, dst: Addr, data: bytes) -> None:
        rec = Sent(self.now, src, dst, data)
        self.sent.append(rec)
        verdict = self.intercept(rec) if self.intercept is not None else None
        if verdict is False:
            return
        if isinstance(verdict, list):
            for d in verdict:
                self._schedule(self.now + d, src, dst, data)
            rec.copies = len(verdict)
            return
        p = self.path(src, dst)
        if p.mtu is not None and len(data) + 8 + 20 > p.mtu:
            self.oversize += 1
            return
        rng = self.rng
        gone = self.now
        if p.rate is not None:  # serialised behind what the link is still sending; lost or not, it took its time
            waiting = p.departures
            while waiting and waiting[0] <= self.now:
                waiting.pop(0)
            if p.queue is not None and len(waiting) >= p.queue:
                self.tail_drops += 1
                return
            gone = max(gone, p.free_at) + (len(data) + 28) / p.rate
            p.free_at = gone
            waiting.append(gone)
        copies = 2 if rng.random() < p.dup else 1
        for _ in range(copies):
            if rng.random() < p.loss:
                continue
            extra = rng.uniform(0.0, p.reorder_delay) if rng.random() < p.reorder else 0.0
            self._schedule(gone + p.delay + extra, src, dst, data)
            rec.copies += 1

    def flush(self) -> None:
        """Collect every pending datagram and event from every node."""
        now = self.now
        for node in {id(n): n for n in self.nodes.values()}.values():
            endpoint = node.endpoint
            while (new := endpoint.next_event()) is not None:
                if isinstance(new, ev.NewAssociation):
                    node.new_associations.append(new.association)
                node.track(new.association)
            for data, dst in endpoint.datagrams_to_send(now):
                self._emit(node.source_for(dst), (dst[0], dst[1]), data)
            for assoc in list(node.events):
                for data, dst in assoc.datagrams_to_send(now):
                    self._emit(node.source_for(dst), (dst[0], dst[1]), data)
                evs = node.events[assoc]
                while (e := assoc.next_event()) is not None:
                    evs.append(e)
                    node.log.append((now, assoc, e))
                    if node.consume and isinstance(e, ev.DataReceived):
                        assoc.consumed(len(e.data))
                    if isinstance(e, ev.AssociationClosed) and node.auto_remove:
                        endpoint.remove(assoc)

    def _next_timer(self) -> tuple[float, Node, Association] | None:
        best: tuple[float, Node, Association] | None = None
        for node in self.nodes.values():
            for assoc in node.events:
                t = assoc.get_timer()
                if t is not None and (best is None or t < best[0]):
                    best = (t, node, assoc)
        return best

    def step(self, deadline: float) -> bool:
        """Process the earliest datagram or due timer not after ``deadline``; False when there is none."""
        self.iterations += 1
        calls = self._calls
        queue = self._queue
        if calls and calls[0][0] <= deadline and (not queue or calls[0][0] <= queue[0][0]):
            when, _seq, fn = calls[0]
            timer = self._next_timer()
            if timer is None or when <= timer[0]:
                heapq.heappop(calls)
                self.now = max(self.now, when)
                fn()
                return True
        timer = self._next_timer()
        if queue and queue[0][0] <= deadline and (timer is None or queue[0][0] <= timer[0]):
            at, _seq, src, dst, data = heapq.heappop(queue)
            self.now = max(self.now, at)
            node = self.nodes.get(dst)
            if node is not None:
                node.received.append((self.now, src, data))
                assoc = node.endpoint.receive_datagram(data, src, self.now)
                if assoc is not None:
                    node.track(assoc)
            return True
        if timer is not None and timer[0] <= deadline:
            at, _node, assoc = timer
            self.now = max(self.now, at)
            assoc.handle_timer(self.now)
            after = assoc.get_timer()
            if after is not None and after <= self.now:
                raise AssertionError(f"timer of {assoc!r} stays due at {self.now} after handle_timer")
            return True
        return False

    def run_until(
        self,
        predicate: Callable[[], bool],
        max_time: float = 60.0,
        *,
        on_step: Callable[[], None] | None = None,
        max_iterations: int = 2_000_000,
    ) -> bool:
        """Run the network until ``predicate()`` holds (True) or ``max_time`` simulated seconds pass (False).

        ``on_step`` runs before every step (an application feeding data, say); the network is flushed
        around it so what it queues leaves at once.
        """
        deadline = self.now + max_time
        for _ in range(max_iterations):
            self.flush()
            if on_step is not None:
                on_step()
                self.flush()
            if predicate():
                return True
            if not self.step(deadline):
                self.now = deadline
                self.flush()
                return predicate()
        raise AssertionError("run_until: iteration limit reached (a livelock?)")

    def run_for(self, seconds: float) -> None:
        self.run_until(lambda: False, seconds)

    # -- inspection ----------------------------------------------------------------------------------------

    def sent_by(self, src: Addr, dst: Addr | None = None) -> list[Sent]:
        return [s for s in self.sent if s.src == src and (dst is None or s.dst == dst)]


def handshake(net: Network, client: Node, server: Node, max_time: float = 30.0) -> tuple[Association, Association]:
    """Connect ``client`` to ``server`` and run until both sides report AssociationUp."""
    ca = client.connect(server)
    ok = net.run_until(
        lambda: client.up(ca) and bool(server.new_associations) and server.up(server.new_associations[-1]), max_time
    )
    assert ok, f"handshake did not complete: client={client.events.get(ca)} server={server.log}"
    return ca, server.new_associations[-1]


# -- a hand-driven peer ------------------------------------------------------------------------------------------


class DataBuilder:
    """DATA (and I-DATA) chunks in sequence for a hand-driven peer: it keeps ``next_tsn``, the SSN of each stream
    and, for I-DATA, the next MID of each (stream, unordered)."""

    next_tsn: int
    ssn: dict[int, int]
    mids: dict[tuple[int, bool], int]

    def data(
        self,
        payload: bytes,
        *,
        stream_id: int = 0,
        ppid: int = 0,
        tsn: int | None = None,
        ssn: int | None = None,
        unordered: bool = False,
        beginning: bool = True,
        ending: bool = True,
        immediate: bool = False,
    ) -> DataChunk:
        """One DATA chunk; without an explicit ``tsn``/``ssn`` the next ones in sequence are taken."""
        if tsn is None:
            tsn = self.next_tsn
            self.next_tsn = (tsn + 1) & 0xFFFFFFFF
        if ssn is None:
            if unordered:
                ssn = 0
            else:
                ssn = self.ssn.get(stream_id, 0)
                if ending:
                    self.ssn[stream_id] = (ssn + 1) & 0xFFFF
        return DataChunk(tsn, stream_id, ssn, ppid, payload, unordered, beginning, ending, immediate)

    def idata(
        self,
        payload: bytes,
        *,
        stream_id: int = 0,
        ppid: int = 0,
        tsn: int | None = None,
        mid: int | None = None,
        fsn: int = 0,
        unordered: bool = False,
        beginning: bool = True,
        ending: bool = True,
    ) -> IDataChunk:
        """One I-DATA chunk (RFC 8260); without an explicit ``tsn``/``mid`` the next ones in sequence are taken (the
        MID moves on after a message's last fragment)."""
        if tsn is None:
            tsn = self.next_tsn
            self.next_tsn = (tsn + 1) & 0xFFFFFFFF
        if mid is None:
            key = (stream_id, unordered)
            mid = self.mids.get(key, 0)
            if ending:
                self.mids[key] = (mid + 1) & 0xFFFFFFFF
        return IDataChunk(
            tsn,
            stream_id,
            mid,
            ppid if beginning else 0,
            0 if beginning else fsn,
            payload,
            unordered,
            beginning,
            ending,
        )


@dataclass
class RawPeer(DataBuilder):
    """The far side of one association, speaking raw packets built with the codec.

    ``tag`` is this peer's own verification tag (what the association must put on its packets) and
    ``peer_tag`` the association's (what we must put on ours).
    """

    addr: Addr
    port: int
    peer_port: int
    tag: int
    peer_tag: int
    next_tsn: int
    #: the first TSN the association under test will use
    peer_initial_tsn: int
    ssn: dict[int, int] = field(default_factory=dict)
    mids: dict[tuple[int, bool], int] = field(default_factory=dict)

    def packet(self, *chunks: Chunk | bytes, vtag: int | None = None) -> bytes:
        return serialize_packet(self.port, self.peer_port, self.peer_tag if vtag is None else vtag, chunks)


def raw_connect(
    server: Endpoint,
    addr: Addr,
    now: float,
    *,
    port: int = 6000,
    tag: int = 0x1234_5678,
    tsn: int = 1000,
    a_rwnd: int = 1 << 20,
    os_: int = 16,
    mis: int = 16,
    params: list[Param] | None = None,
) -> tuple[Association, RawPeer, list[bytes]]:
    """Open an association to ``server`` by hand, offering ``params`` (extensions) in the INIT. Returns it, the
    peer, and its first packets (COOKIE-ACK...)."""
    init = InitChunk(tag, a_rwnd, os_, mis, tsn, list(params or []))
    server.receive_datagram(serialize_packet(port, server.local_port, 0, [init]), addr, now)
    replies = server.datagrams_to_send(now)
    assert len(replies) == 1, replies
    ack = parse_packet(replies[0][0]).chunks[0]
    assert isinstance(ack, InitAckChunk)
    cookie = next(p.cookie for p in ack.params if isinstance(p, StateCookieParam))
    echo = serialize_packet(port, server.local_port, ack.initiate_tag, [CookieEchoChunk(cookie)])
    assoc = server.receive_datagram(echo, addr, now)
    assert assoc is not None
    while server.next_event() is not None:
        pass
    out = [d for d, _a in assoc.datagrams_to_send(now)]
    assert any(isinstance(c, CookieAckChunk) for d in out for c in parse_packet(d).chunks)
    peer = RawPeer(addr, port, server.local_port, tag, ack.initiate_tag, tsn, ack.initial_tsn)
    return assoc, peer, out


def raw_accept(
    client: Endpoint,
    server_addr: Addr,
    now: float,
    *,
    port: int = 7000,
    tag: int = 0x0ABC_DEF0,
    tsn: int = 50_000,
    a_rwnd: int = 1 << 20,
    os_: int = 16,
    mis: int = 16,
) -> tuple[Association, RawPeer]:
    """Let ``client`` connect to a hand-driven server that answers with the given INIT-ACK parameters."""
    assoc = client.connect(server_addr, port, now)
    ((init_pkt, _a),) = assoc.datagrams_to_send(now)
    init = parse_packet(init_pkt).chunks[0]
    assert isinstance(init, InitChunk)
    ack = InitAckChunk(tag, a_rwnd, os_, mis, tsn, [StateCookieParam(b"raw-peer-cookie!")])
    assoc.receive_datagram(serialize_packet(port, client.local_port, init.initiate_tag, [ack]), server_addr, now)
    ((echo_pkt, _a),) = assoc.datagrams_to_send(now)
    assert isinstance(parse_packet(echo_pkt).chunks[0], CookieEchoChunk)
    assoc.receive_datagram(
        serialize_packet(port, client.local_port, init.initiate_tag, [CookieAckChunk()]), server_addr, now
    )
    peer = RawPeer(server_addr, port, client.local_port, tag, init.initiate_tag, tsn, init.initial_tsn)
    return assoc, peer


def drain(assoc: Association, *, consume: bool = True) -> list[ev.Event]:
    """The association's events so far; with ``consume`` the application reads each message it was given."""
    out: list[ev.Event] = []
    while (e := assoc.next_event()) is not None:
        out.append(e)
        if consume and isinstance(e, ev.DataReceived):
            assoc.consumed(len(e.data))
    return out


def chunks_of(datagrams: Iterable[bytes | tuple[bytes, Any]]) -> list[Chunk]:
    out: list[Chunk] = []
    for d in datagrams:
        raw = d[0] if isinstance(d, tuple) else d
        out.extend(parse_packet(raw).chunks)
    return out


def init_ack_for(server: Endpoint, addr: Addr, now: float, *, port: int = 6000, tag: int = 0x55) -> InitAckChunk:
    """The INIT-ACK ``server`` answers a bare INIT from ``addr`` with (nothing else is kept or sent)."""
    init = InitChunk(tag, 65536, 4, 4, 1, [])
    server.receive_datagram(serialize_packet(port, server.local_port, 0, [init]), addr, now)
    ((data, _addr),) = server.datagrams_to_send(now)
    ack = parse_packet(data).chunks[0]
    assert isinstance(ack, InitAckChunk)
    return ack


def cookie_of(ack: InitAckChunk) -> bytes:
    return next(p.cookie for p in ack.params if isinstance(p, StateCookieParam))
