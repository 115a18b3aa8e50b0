"""The shipped echo behaviour under input a peer is allowed to send."""

from __future__ import annotations

import asyncio
import logging

import pytest

from mux import connect
from tests import apps as tb
from tests.conftest import ServerFactory, client_target, listener


async def test_a_datagram_from_a_peer_that_accepts_none_is_dropped_not_a_crash(
    make_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """RFC 9221 is one-sided: a client may send DATAGRAM frames without advertising that it takes any."""
    server = await make_server("behaviours.echo:Echo", [listener("quic")])
    url, options = client_target(server, "quic")
    client = tb.Client()
    conn = await connect(client, url, options={**options, "datagrams": False})
    conn.send_datagram(b"no way back")
    stream = conn.open_stream()
    await stream.send(b"ping", fin=True)
    await asyncio.wait_for(client.fin_event(stream.id).wait(), 5)
    assert bytes(client.data[stream.id]) == b"ping"  # the connection is alive and well
    assert conn.state == "connected"
    (server_conn,) = server.pool.connections
    assert server_conn.behaviour.dropped_datagrams == 1  # type: ignore[attr-defined]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    conn.close()
    await conn.wait_closed()
