"""Prometheus metrics: the pool's and the connections' own counters, read at scrape time.

Nothing is counted per packet for metrics: a scrape reads the pool's counts, each live connection's
``stats()`` and the totals the connections that ended left behind (:class:`ServerCollector`). Only the
handshake latency is observed as it happens, once per connection. Each server has its own
``CollectorRegistry``, so several servers in one process (tests) never mix. The HTTP endpoint runs on the
event loop, so a scrape never reads the pool from another thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from mux.connection import Connection
from mux.connlog import peer_text

if TYPE_CHECKING:
    from mux.server import Server

log = logging.getLogger("mux.metrics")

LABELS = ("listener", "transport")
HANDSHAKE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: (metric name, help, where the figure comes from: a Connection attribute or a ``stats()`` key)
TRAFFIC = (
    ("mux_bytes_received", "Application bytes received (stream data and datagrams)", "bytes_in"),
    ("mux_bytes_sent", "Application bytes sent (stream data and datagrams)", "bytes_out"),
    ("mux_packets_received", "Packets received", "packets_received"),
    ("mux_packets_sent", "Packets sent", "packets_sent"),
    (
        "mux_retransmissions",
        "Retransmissions (QUIC: packets whose frames were resent; SCTP: DATA chunks)",
        "packets_retransmitted",
    ),
)
COUNTS = (
    ("mux_connections_accepted", "Peers admitted by the pool", "accepted"),
    ("mux_connections_refused", "Peers refused (max_connections, suspended, draining, the behaviour)", "refused"),
    ("mux_connections_closed", "Connections ended", "closed"),
)
GAUGES = (
    ("mux_connections_active", "Connections established", "active"),
    ("mux_connections_handshaking", "Connections in their handshake", "handshaking"),
)


def traffic(conn: Connection) -> dict[str, int]:
    """One connection's figures for :data:`TRAFFIC`."""
    try:
        stats = conn.stats()
    except Exception:  # a transport's figures must never break a scrape
        stats = {}
    figures = {"bytes_in": conn.bytes_in, "bytes_out": conn.bytes_out}
    for _, _, key in TRAFFIC[2:]:
        figures[key] = int(stats.get(key) or 0)
    return figures


class ServerCollector(Collector):
    """Reads one server's pool and connections at each scrape; also the pool's observer."""

    def __init__(self, server: Server, registry: CollectorRegistry) -> None:
        self.server = server
        #: what connections that ended carried, per (listener, transport)
        self.ended: dict[tuple[str, str], Counter[str]] = {}
        self.handshakes = Histogram(
            "mux_handshake_duration_seconds",
            "From admission to the handshake done",
            LABELS,
            buckets=HANDSHAKE_BUCKETS,
            registry=registry,
        )

    # -- the pool's observer -----------------------------------------------------------------

    def connected(self, conn: Connection) -> None:
        if conn.connected_at is not None:
            self.handshakes.labels(conn.listener or "", conn.transport).observe(conn.connected_at - conn.started)

    def closed(self, conn: Connection) -> None:
        self.ended.setdefault((conn.listener or "", conn.transport), Counter()).update(traffic(conn))

    # -- the scrape ------------------------------------------------------------------------------

    def collect(self) -> Iterable[Metric]:
        server = self.server
        info = server.pool.info()
        transports = {listener.name: listener.transport_name for listener in server.listeners}
        transports.update({listener: transport for listener, transport in self.ended})
        live: dict[tuple[str, str], Counter[str]] = {}
        for conn in server.pool.connections:
            transports.setdefault(conn.listener or "", conn.transport)
            live.setdefault((conn.listener or "", conn.transport), Counter()).update(traffic(conn))

        def labelled(name: str) -> list[str]:
            return [name, transports.get(name, "")]

        for metric, text, key in GAUGES:
            gauge = GaugeMetricFamily(metric, text, labels=LABELS)
            for name, counts in info["listeners"].items():
                gauge.add_metric(labelled(name), counts[key])
            yield gauge
        for metric, text, key in COUNTS:
            counter = CounterMetricFamily(metric, text, labels=LABELS)
            for name, counts in info["listeners"].items():
                counter.add_metric(labelled(name), counts[key])
            yield counter
        errors = CounterMetricFamily("mux_callback_errors", "Behaviour callbacks that crashed", labels=LABELS)
        for name, counts in info["listeners"].items():
            closed_errors = counts["errors"].get("callback_error", 0)
            live_errors = sum(c.callback_errors for c in server.pool.connections if c.listener == name)
            errors.add_metric(labelled(name), closed_errors + live_errors)
        yield errors
        keys = set(live) | set(self.ended) | {(name, transports.get(name, "")) for name in info["listeners"]}
        for metric, text, key in TRAFFIC:
            counter = CounterMetricFamily(metric, text, labels=LABELS)
            for labels in sorted(keys):
                value = live.get(labels, Counter())[key] + self.ended.get(labels, Counter())[key]
                counter.add_metric(list(labels), value)
            yield counter
        peer = CounterMetricFamily(
            "mux_listener_events",
            "A listener's own counters: datagrams in and out, and what peers caused that it dropped or answered",
            labels=(*LABELS, "event"),
        )
        for name, counts in info["listeners"].items():
            for event, value in sorted((counts.get("peer") or {}).items()):
                peer.add_metric([*labelled(name), event], value)
        yield peer
        for metric, text, value in (
            ("mux_pool_max_connections", "The pool's max_connections", info["max_connections"]),
            ("mux_pool_num_acceptors", "The pool's num_acceptors", info["num_acceptors"]),
            (
                "mux_pool_running",
                "1 while the pool admits peers (not suspended, draining or stopped)",
                int(info["state"] == "running"),
            ),
        ):
            yield GaugeMetricFamily(metric, text, value=value)


class MetricsServer:
    """``GET /metrics`` (any path but a favicon) over HTTP/1.0, on the event loop; one scrape per connection."""

    def __init__(self, server: Server, host: str, port: int) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.collector = ServerCollector(server, self.registry)
        self.registry.register(self.collector)
        self.server = server
        self.host = host
        self.port = port
        self._server: asyncio.AbstractServer | None = None

    @property
    def url(self) -> str:
        return f"http://{peer_text((self.host, self.port))}/metrics"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._client, self.host, self.port, limit=16 * 1024)
        self.port = self._server.sockets[0].getsockname()[1]
        self.server.pool.observers.append(self.collector)
        log.info("metrics on %s", self.url)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        with contextlib.suppress(ValueError):
            self.server.pool.observers.remove(self.collector)

    def scrape(self) -> bytes:
        return generate_latest(self.registry)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10.0)
            method, _, rest = head.partition(b" ")
            path = rest.split(b" ", 1)[0]
            if method not in (b"GET", b"HEAD"):
                status, body, ctype = b"405 Method Not Allowed", b"GET /metrics\n", b"text/plain"
            elif path.startswith(b"/favicon"):
                status, body, ctype = b"404 Not Found", b"GET /metrics\n", b"text/plain"
            else:
                status, body, ctype = b"200 OK", self.scrape(), CONTENT_TYPE_LATEST.encode()
            writer.write(
                b"HTTP/1.0 "
                + status
                + b"\r\nContent-Type: "
                + ctype
                + b"\r\nContent-Length: "
                + str(len(body)).encode()
                + b"\r\nConnection: close\r\n\r\n"
                + (b"" if method == b"HEAD" else body)
            )
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()
