"""The acceptor pool: one per server, shared by every listener whatever its transport.

It decides admission *before* a transport keeps state for a new peer (``admit``), supervises the
connections it admitted (handshake timeout, counts), and runs the lifecycle: suspend, resume, drain,
stop. The vocabulary is ranch's: ``num_acceptors`` bounds handshakes in flight, ``max_connections``
bounds handshaking plus established connections.

Each transport states what it does with a ``BUSY`` or ``REFUSE`` answer (see its listener module).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from mux import connlog
from mux.behaviour import ConnectionBehaviour
from mux.connection import Connection
from mux.logs import peer_log
from mux.transport import TransportConnection

log = logging.getLogger("mux.pool")


class Admission(enum.Enum):
    ACCEPT = "accept"
    #: ``num_acceptors`` handshakes are already in flight: try again later (QUIC drops the Initial)
    BUSY = "busy"
    #: at ``max_connections``, or suspended: refuse the peer
    REFUSE = "refuse"


@dataclass(slots=True)
class PoolOptions:
    num_acceptors: int = 100
    max_connections: int = 10_000
    handshake_timeout_ms: int = 10_000
    shutdown_timeout_ms: int = 5_000


@dataclass(slots=True)
class Counts:
    active: int = 0
    handshaking: int = 0
    accepted: int = 0
    refused: int = 0
    closed: int = 0
    errors: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "active": self.active,
            "handshaking": self.handshaking,
            "accepted": self.accepted,
            "refused": self.refused,
            "closed": self.closed,
            "errors": dict(self.errors),
        }


class Observer(Protocol):
    """Told of each connection's handshake done and its end (metrics); called on the event loop."""

    def connected(self, conn: Connection) -> None: ...

    def closed(self, conn: Connection) -> None: ...


class AcceptorPool:
    def __init__(
        self,
        behaviour: Callable[[], ConnectionBehaviour],
        behaviour_opts: dict[str, Any] | None = None,
        options: PoolOptions | None = None,
    ) -> None:
        self.behaviour = behaviour
        self.behaviour_opts = behaviour_opts or {}
        self.options = options or PoolOptions()
        self.state = "running"  # running | suspended | draining | stopped
        self._counts: dict[str, Counts] = {}
        self._connections: set[Connection] = set()
        self._handshaking: set[Connection] = set()
        self._handshake_timers: dict[Connection, asyncio.TimerHandle] = {}
        self._empty = asyncio.Event()
        self._empty.set()
        self._listener_counters: dict[str, Callable[[], Mapping[str, int]]] = {}
        #: listeners that admit no one while the pool runs, and why: ``suspended`` (ranch's
        #: suspend_listener) or ``removed`` (a reload took it out; its connections drain)
        self.closed_to: dict[str, str] = {}
        self.observers: list[Observer] = []

    # -- admission (called by listeners) -------------------------------------------------------

    def counts(self, listener: str) -> Counts:
        counts = self._counts.get(listener)
        if counts is None:
            counts = self._counts[listener] = Counts()
        return counts

    def admit(self, listener: str) -> Admission:
        """Decide about a new peer before any state is kept for it; refusals are counted here."""
        if self.state != "running":
            self._refuse(listener, self.state)
            return Admission.REFUSE
        if self.closed_to:
            why = self.closed_to.get(listener)
            if why is not None:
                self._refuse(listener, why)
                return Admission.REFUSE
        if len(self._connections) >= self.options.max_connections:
            self._refuse(listener, "max_connections")
            return Admission.REFUSE
        if len(self._handshaking) >= self.options.num_acceptors:
            self.counts(listener).errors["busy"] += 1
            return Admission.BUSY
        return Admission.ACCEPT

    def _refuse(self, listener: str, why: str) -> None:
        counts = self.counts(listener)
        counts.refused += 1
        counts.errors[f"refused_{why}"] += 1

    def accept(self, listener: str, tconn: TransportConnection, props: dict[str, Any]) -> Connection:
        """Start supervising an admitted peer; its ``new_conn`` callback runs first."""
        counts = self.counts(listener)
        counts.accepted += 1
        counts.handshaking += 1
        conn = Connection(
            tconn,
            self.behaviour(),
            self.behaviour_opts,
            supervisor=self,
            listener=listener,
            new_conn_props=props,
        )
        self._connections.add(conn)
        self._handshaking.add(conn)
        self._empty.clear()
        loop = asyncio.get_running_loop()
        self._handshake_timers[conn] = loop.call_later(
            self.options.handshake_timeout_ms / 1000.0, self._handshake_timeout, conn
        )
        return conn

    def _handshake_timeout(self, conn: Connection) -> None:
        self._handshake_timers.pop(conn, None)
        if conn.state == "handshaking":
            assert conn.listener is not None
            self.counts(conn.listener).errors["handshake_timeout"] += 1
            peer_log(log, "pool.handshake_timeout", "connection %d: handshake timed out", conn.id)
            conn.close(0, "handshake timeout")

    # -- supervision (called by connections) ---------------------------------------------------

    def _connected(self, conn: Connection) -> None:
        timer = self._handshake_timers.pop(conn, None)
        if timer is not None:
            timer.cancel()
        if conn in self._handshaking:
            self._handshaking.discard(conn)
            assert conn.listener is not None
            counts = self.counts(conn.listener)
            counts.handshaking -= 1
            counts.active += 1
            conn.connected_at = now = asyncio.get_running_loop().time()
            connlog.accepted(conn, now)
            for observer in self.observers:
                observer.connected(conn)

    def _rejected(self, conn: Connection) -> None:
        assert conn.listener is not None
        self._refuse(conn.listener, "by_behaviour")

    def _closed(self, conn: Connection) -> None:
        if conn not in self._connections:
            return
        self._connections.discard(conn)
        assert conn.listener is not None
        counts = self.counts(conn.listener)
        timer = self._handshake_timers.pop(conn, None)
        if timer is not None:
            timer.cancel()
        if conn in self._handshaking:
            self._handshaking.discard(conn)
            counts.handshaking -= 1
        else:
            counts.active -= 1
        counts.closed += 1
        reason = (conn.close_props or {}).get("error")
        if reason and reason != "refused":  # a refusal is counted once, by why (``_refuse``)
            counts.errors[str(reason)] += 1
        if conn.callback_errors:
            counts.errors["callback_error"] += conn.callback_errors
        connlog.closed(conn, asyncio.get_running_loop().time())
        for observer in self.observers:
            observer.closed(conn)
        if not self._connections:
            self._empty.set()

    @property
    def handshakes_in_flight(self) -> int:
        """Admitted peers still handshaking, over every listener (what ``num_acceptors`` bounds)."""
        return len(self._handshaking)

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def connections(self) -> frozenset[Connection]:
        return frozenset(self._connections)

    def suspend(self, listener: str | None = None) -> None:
        """Stop admitting (on one listener, or all); existing connections carry on."""
        if listener is not None:
            self.closed_to.setdefault(listener, "suspended")
        elif self.state == "running":
            self.state = "suspended"

    def resume(self, listener: str | None = None) -> None:
        if listener is not None:
            if self.closed_to.get(listener) == "suspended":
                del self.closed_to[listener]
        elif self.state == "suspended":
            self.state = "running"

    def listener_connections(self, listener: str) -> list[Connection]:
        return [conn for conn in self._connections if conn.listener == listener]

    async def drain(
        self, timeout_ms: int | None = None, error_code: int = 0, reason: str = "server shutting down"
    ) -> int:
        """Stop admitting, let connections finish by themselves until empty or the timeout, then
        close the rest with ``error_code``. Returns how many had to be closed."""
        if self.state in ("running", "suspended"):
            self.state = "draining"
        timeout = (self.options.shutdown_timeout_ms if timeout_ms is None else timeout_ms) / 1000.0
        started = time.monotonic()
        try:
            await asyncio.wait_for(self._empty.wait(), timeout)
            forced = 0
        except TimeoutError:
            rest = list(self._connections)
            forced = len(rest)
            log.info("drain: closing %d connection(s) still open after %.1fs", forced, timeout)
            for conn in rest:
                conn.close(error_code, reason)
            try:
                await asyncio.wait_for(self._empty.wait(), max(1.0, timeout))
            except TimeoutError:
                log.warning("drain: %d connection(s) did not close", len(self._connections))
        log.info("drained in %.2fs", time.monotonic() - started)
        return forced

    async def stop(self) -> None:
        """Close everything now: a graceful close first, then abort whoever is still there after 1 s."""
        self.state = "stopped"
        for conn in list(self._connections):
            conn.close(0, "server stopped")
        try:
            await asyncio.wait_for(self._empty.wait(), 1.0)
            return
        except TimeoutError:
            pass
        for conn in list(self._connections):
            conn.abort("server stopped")  # e.g. waiting for a SHUTDOWN-COMPLETE the peer will never send
        try:
            await asyncio.wait_for(self._empty.wait(), 1.0)
        except TimeoutError:
            log.warning("stop: %d connection(s) did not close", len(self._connections))

    def add_counters(self, listener: str, counters: Callable[[], Mapping[str, int]]) -> None:
        """Show a listener's own counters in ``info()`` (what peers sent that was dropped, refused, answered...)."""
        self._listener_counters[listener] = counters

    def info(self) -> dict[str, Any]:
        """Counts per listener and in total, plus the pool's state and limits.

        Each listener's entry also carries its transport's counters under ``peer``: malformed and unexpected
        packets, peer errors, address changes... everything a peer can cause is counted there rather than logged.
        """
        total = Counts()
        listeners = {}
        for name in [*self._counts, *(n for n in self._listener_counters if n not in self._counts)]:
            counts = self.counts(name)
            listeners[name] = counts.as_dict()
            counters = self._listener_counters.get(name)
            if counters is not None:
                listeners[name]["peer"] = dict(counters())
            total.active += counts.active
            total.handshaking += counts.handshaking
            total.accepted += counts.accepted
            total.refused += counts.refused
            total.closed += counts.closed
            total.errors.update(counts.errors)
        for name, why in self.closed_to.items():
            if name in listeners:
                listeners[name]["state"] = why
        return {
            "state": self.state,
            "num_acceptors": self.options.num_acceptors,
            "max_connections": self.options.max_connections,
            "total": total.as_dict(),
            "listeners": listeners,
        }
