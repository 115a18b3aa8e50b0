"""An idle SCTP association holds no queues (mailbox, events, retransmissions, scheduler ring) and no loop timer of
its own: they are made on first use. These tests show the first use after idling still works."""

from __future__ import annotations

import asyncio

from mux import connect
from mux.sctp.connection import SctpTransportConnection
from mux.udp import FAR
from tests import apps as tb
from tests.conftest import ServerFactory, client_target, listener


async def _idle(conn: object) -> None:
    for _ in range(200):
        if getattr(conn, "idle", False):
            return
        await asyncio.sleep(0.01)


async def test_an_idle_association_holds_no_queues_and_its_first_message_after_idling_is_echoed(
    make_server: ServerFactory,
) -> None:
    server = await make_server("behaviours.echo:Echo", [listener("sctp", hbinterval=30_000)])
    url, options = client_target(server, "sctp")
    client = tb.Client()
    conn = await connect(client, url, options=options)
    (server_conn,) = server.pool.connections
    tconn = server_conn._tconn
    assert isinstance(tconn, SctpTransportConnection)
    assoc = tconn.assoc
    for _ in range(600):  # path MTU discovery climbs to loopback's maximum, then keeps no timer (a loop timer
        # armed for its last probe's deadline fires once more, finds nothing due, and the wheel takes over)
        if (assoc._pmtud is None or assoc._pmtud.next_timer() is None) and tconn._timer is None:
            break
        await asyncio.sleep(0.01)
    await _idle(server_conn)
    await asyncio.sleep(0.05)
    assert server_conn._mailbox is None and server_conn._timers is None and server_conn._closed_future is None
    assert assoc._events == [] and assoc._out.rtx is None and assoc._queue.active is None  # type: ignore[attr-defined]
    assert tconn._timer is None and tconn._slot is not None  # the heartbeat, FAR away, waits in the driver's wheel
    assert assoc.get_timer() is not None and assoc.get_timer() - asyncio.get_running_loop().time() > FAR  # type: ignore[operator]
    stats = server_conn.stats()  # an idle association's figures, its mailbox's too
    assert stats["mailbox"] == {"queued": 0, "inbox_bytes": 0, "dgram_bytes": 0, "dgram_dropped": 0}
    assert stats["state"] == "connected" and stats["transport"] == "sctp"
    # counters are stored from their first count, yet every one shows: counted or 0
    assert "retransmitted_chunks" not in assoc.stats and stats["sctp"]["retransmitted_chunks"] == 0
    assert stats["packets_retransmitted"] == 0

    streams = [conn.open_stream(), conn.open_stream()]  # both open: two stream ids (SCTP reuses a closed one's)
    for round_, stream in enumerate(streams):  # the first message after idling, then again after idling once more
        await stream.send(b"after idle %d" % round_, fin=True)
        await asyncio.wait_for(client.fin_event(stream.id).wait(), 5)
        assert bytes(client.data[stream.id]) == b"after idle %d" % round_
        await _idle(server_conn)
        await asyncio.sleep(0.05)
        assert server_conn._mailbox is None and assoc._queue.active is None  # type: ignore[attr-defined]
        assert assoc._out.rtx is None and assoc._events == []
    assert server_conn.bytes_in == len(b"after idle 0") + len(b"after idle 1")
    conn.close()
    await conn.wait_closed()


async def test_an_idle_quic_connection_holds_no_handshake_buffers_and_credit_still_flows_after_idling(
    make_server: ServerFactory,
) -> None:
    """aioquic's 48 KiB of TLS output buffers go once the handshake is done, and its spent key pairs once it is
    confirmed; mux's per-connection state stays out of aioquic's instance dict (one attribute more doubles it), and
    the per-stream credit table is made on first use: more than both windows echoed after idling shows the credit,
    now read from the configuration, still rises."""
    from aioquic import tls
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.connection import QuicConnection

    from mux.quic.connection import QuicTransportConnection
    from mux.quic.core import _SPENT_KEYS

    stream_window, conn_window = 4096, 8192
    server = await make_server(
        "behaviours.echo:Echo",
        [listener("quic", stream_recv_window_default=stream_window, conn_flow_control_window=conn_window)],
    )
    url, options = client_target(server, "quic")
    client = tb.Client()
    conn = await connect(client, url, options=options)
    (server_conn,) = server.pool.connections
    await _idle(server_conn)
    await asyncio.sleep(0.05)
    tconn = server_conn._tconn
    assert isinstance(tconn, QuicTransportConnection)
    assert not hasattr(tconn, "__dict__")  # slotted
    quic = tconn.quic
    assert quic._handshake_complete and quic._crypto_buffers == {}
    spent = {quic._cryptos[epoch] for epoch in (tls.Epoch.INITIAL, tls.Epoch.HANDSHAKE, tls.Epoch.ZERO_RTT)}
    assert spent == set(quic._cryptos_initial.values()) == {_SPENT_KEYS}  # one key-less pair for them all
    assert quic._mux.stream_consumed is None
    plain = QuicConnection(configuration=QuicConfiguration(is_client=True))
    assert set(vars(quic)) - set(vars(plain)) <= {"tls"}  # aioquic's (set as the handshake starts), none of ours
    assert server_conn._mailbox is None

    payload = bytes(range(256)) * (3 * conn_window // 256)  # three connection windows, six stream windows
    stream = conn.open_stream()
    await stream.send(payload, fin=True)
    await asyncio.wait_for(client.fin_event(stream.id).wait(), 10)
    assert bytes(client.data[stream.id]) == payload
    assert quic._mux.stream_consumed is not None and quic._mux.conn_consumed == len(payload)
    assert quic._local_max_data.value >= len(payload)
    conn.close()
