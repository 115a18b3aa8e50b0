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
