"""One structured line per connection accepted and closed (mux/connlog.py), in both log formats."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from mux import connect, logs
from tests import apps as tb
from tests.conftest import ServerFactory, client_target, listener


def conn_records(caplog: pytest.LogCaptureFixture, conn_id: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "mux.conn" and getattr(r, "fields", {}).get("conn_id") == conn_id]


async def test_accepted_and_closed_lines_carry_the_connection_fields(
    make_server: ServerFactory, transport: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "mux.conn")
    server = await make_server("behaviours.echo:Echo", [listener(transport)])
    url, options = client_target(server, transport)
    client = tb.Client()
    conn = await connect(client, url, options=options)
    stream = conn.open_stream()
    await stream.send(b"x" * 1000, fin=True)
    await asyncio.wait_for(client.fin_event(stream.id).wait(), 5)
    (server_conn,) = server.pool.connections
    conn.close(7, "done here")
    await conn.wait_closed()
    await asyncio.wait_for(server_conn.wait_closed(), 5)
    accepted, closed = conn_records(caplog, server_conn.id)
    assert accepted.levelno == closed.levelno == logging.INFO
    peer = f"127.0.0.1:{conn.local_address[1]}"
    for record in (accepted, closed):
        fields = record.fields  # type: ignore[attr-defined]
        assert fields["transport"] == transport and fields["listener"] == transport and fields["peer"] == peer
    assert "accepted" in accepted.getMessage() and accepted.fields["handshake_ms"] >= 0  # type: ignore[attr-defined]
    fields = closed.fields  # type: ignore[attr-defined]
    assert fields["bytes_in"] == fields["bytes_out"] == 1000
    assert (fields["by"], fields["error_code"]) == ("peer", 7)
    assert fields["duration_ms"] > 0
    if transport == "quic":  # SCTP's ABORT carries the reason too, but only between mux peers as asserted elsewhere
        assert fields["reason"] == "done here"

    # the JSON format makes each field a key; the text format appends key=value
    line = json.loads(logs.JsonFormatter().format(closed))
    assert line["conn_id"] == server_conn.id and line["bytes_in"] == 1000 and line["msg"] == closed.getMessage()
    text = logs.TextFormatter().format(closed)
    assert f"conn_id={server_conn.id} transport={transport}" in text and "bytes_out=1000" in text


def test_a_field_never_replaces_the_line_s_own_keys() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello %s", ("you",), None)
    record.fields = {"msg": "forged", "level": "x", "peer": "a b"}
    line = json.loads(logs.JsonFormatter().format(record))
    assert (line["msg"], line["level"], line["field_msg"], line["peer"]) == ("hello you", "info", "forged", "a b")
    assert logs.TextFormatter().format(record).endswith('msg=forged level=x peer="a b"')


async def test_a_handshake_that_never_completes_is_logged_at_debug_only(
    make_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """A QUIC Initial anyone can forge takes a slot: its end must not write an info line (it is rate-limited)."""
    caplog.set_level(logging.DEBUG, "mux.conn")
    server = await make_server("tests.apps:Refusing", [listener("quic")])
    url, options = client_target(server, "quic")
    with pytest.raises(Exception):  # noqa: B017  the refusal surfaces as the client's connect error
        await connect(tb.Client(), url, options=options)
    for _ in range(100):
        if server.pool.info()["total"]["closed"] == 1:
            break
        await asyncio.sleep(0.02)
    records = [r for r in caplog.records if r.name == "mux.conn"]
    assert records and all(r.levelno == logging.DEBUG for r in records)
    assert "closed in its handshake" in records[-1].getMessage()
