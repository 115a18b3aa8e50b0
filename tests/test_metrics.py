"""Prometheus metrics scraped over real HTTP while real connections carry traffic (mux/metrics.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mux import config as cfg
from mux import connect
from mux.server import Server
from tests import apps as tb
from tests.conftest import client_target, listener

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(server: Server) -> tuple[str, Samples]:
    """GET /metrics over a TCP connection, as Prometheus does; the samples by name and labels."""
    assert server.metrics is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", server.metrics.port)
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    response = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200 OK") and b"Content-Type: text/plain; version=" in head
    text = body.decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return text, samples


def of(samples: Samples, name: str, listener: str, transport: str, **more: str) -> float:
    labels = tuple(sorted({"listener": listener, "transport": transport, **more}.items()))
    return samples[(name, labels)]


@pytest.fixture
async def servers() -> AsyncIterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:
        await asyncio.wait_for(server.stop(), 10)


async def start(servers: list[Server], behaviour: str, listeners: list[dict[str, Any]]) -> Server:
    data = {"behaviour": behaviour, "listeners": listeners, "metrics": {"host": "127.0.0.1", "port": 0}}
    server = Server(cfg.parse(data, "<test>"))
    await server.start()
    servers.append(server)
    return server


async def echo_round(client: tb.Client, conn: Any, payload: bytes) -> None:
    stream = conn.open_stream()
    await stream.send(payload, fin=True)
    await asyncio.wait_for(client.fin_event(stream.id).wait(), 10)


async def test_counters_move_with_real_traffic(servers: list[Server], transport: str) -> None:
    server = await start(servers, "tests.apps:Recording", [listener(transport)])
    _, empty = await scrape(server)
    assert of(empty, "mux_connections_active", transport, transport) == 0
    assert of(empty, "mux_bytes_received_total", transport, transport) == 0

    url, options = client_target(server, transport)
    client = tb.Client()
    conn = await connect(client, url, options=options)
    await echo_round(client, conn, b"a" * 3000)
    _, during = await scrape(server)
    assert of(during, "mux_connections_active", transport, transport) == 1
    assert of(during, "mux_connections_accepted_total", transport, transport) == 1
    assert of(during, "mux_bytes_received_total", transport, transport) == 3000
    assert of(during, "mux_bytes_sent_total", transport, transport) == 3000
    assert of(during, "mux_packets_received_total", transport, transport) > 0
    assert of(during, "mux_packets_sent_total", transport, transport) > 0
    assert of(during, "mux_handshake_duration_seconds_count", transport, transport) == 1
    assert of(during, "mux_listener_events_total", transport, transport, event="rx") > 0

    await echo_round(client, conn, b"b" * 5000)
    crashing = conn.open_stream()
    await crashing.send(b"crash")  # the behaviour raises: one callback error, the connection is closed
    await asyncio.wait_for(conn.wait_closed(), 10)
    for _ in range(100):
        if not server.pool.connections:
            break
        await asyncio.sleep(0.02)
    _, after = await scrape(server)
    # what the closed connection carried stays counted: counters never go back
    assert of(after, "mux_bytes_received_total", transport, transport) == 3000 + 5000 + len(b"crash")
    assert of(after, "mux_bytes_sent_total", transport, transport) == 8000
    for name in ("mux_packets_received_total", "mux_packets_sent_total"):
        assert of(after, name, transport, transport) > of(during, name, transport, transport)
    assert of(after, "mux_callback_errors_total", transport, transport) == 1
    assert of(after, "mux_connections_active", transport, transport) == 0
    assert of(after, "mux_connections_closed_total", transport, transport) == 1


async def test_refusals_and_each_server_its_own_registry(servers: list[Server]) -> None:
    """Two servers in one process: each endpoint shows its own listeners only (no global registry)."""
    first = await start(servers, "tests.apps:Refusing", [listener("quic", name="one")])
    second = await start(servers, "behaviours.echo:Echo", [listener("quic", name="two")])
    url, options = client_target(first, "one")
    with pytest.raises(Exception):  # noqa: B017  the refusal surfaces as the client's connect error
        await connect(tb.Client(), url, options=options, timeout=5)
    url, options = client_target(second, "two")
    conn = await connect(tb.Client(), url, options=options)
    text_one, one = await scrape(first)
    text_two, two = await scrape(second)
    assert of(one, "mux_connections_refused_total", "one", "quic") == 1
    assert of(two, "mux_connections_accepted_total", "two", "quic") == 1
    assert 'listener="two"' not in text_one and 'listener="one"' not in text_two
    conn.close()


async def test_the_endpoint_answers_only_get(servers: list[Server]) -> None:
    server = await start(servers, "behaviours.echo:Echo", [listener("quic")])
    assert server.metrics is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", server.metrics.port)
    writer.write(b"POST /metrics HTTP/1.1\r\n\r\n")
    assert (await asyncio.wait_for(reader.read(), 10)).startswith(b"HTTP/1.0 405")
    writer.close()
