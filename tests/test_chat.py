"""The chat behaviour: cross-connection messages through each connection's mailbox."""

from __future__ import annotations

import asyncio

from mux import connect
from tests import apps as tb
from tests.conftest import ServerFactory, client_target, listener


async def read_until(client: tb.Client, stream_id: int, text: bytes, timeout: float = 5.0) -> str:
    async with asyncio.timeout(timeout):
        while text not in client.data.get(stream_id, b""):
            await client.events.get()
    return client.data[stream_id].decode()


async def test_room_broadcast_and_leave(make_server: ServerFactory, transport: str) -> None:
    server = await make_server("behaviours.chat:Chat", [listener(transport)])
    url, options = client_target(server, transport)
    alice, bob = tb.Client(), tb.Client()
    conn_a = await connect(alice, url, options=options)
    conn_b = await connect(bob, url, options=options)
    stream_a, stream_b = conn_a.open_stream(), conn_b.open_stream()
    await stream_b.send(b"/nick bob\n/who\n")
    await read_until(bob, stream_b.id, b"* in lobby: bob")  # bob is in before alice speaks
    await stream_a.send(b"/nick alice\n")
    await read_until(bob, stream_b.id, b"is now alice")
    await stream_a.send(b"hello bob\n")
    assert "alice: hello bob" in await read_until(bob, stream_b.id, b"hello bob")
    await stream_b.send(b"/who\n")
    assert "* in lobby: alice, bob" in await read_until(bob, stream_b.id, b"* in lobby: alice")
    assert "alice: hello bob" not in alice.data.get(stream_a.id, b"").decode()  # no echo to the speaker
    conn_a.close()
    assert "* alice left lobby" in await read_until(bob, stream_b.id, b"left lobby")
    conn_b.close()


async def test_a_member_who_does_not_read_misses_lines_instead_of_piling_them_up() -> None:
    """Bob's mailbox holds at most MAX_BACKLOG lines from the room, however much alice says while he is stuck."""
    from behaviours import chat
    from mux import transport as t
    from mux.connection import Connection
    from tests.test_connection_inbox import FakeTransport

    alice, bob = chat.Chat(), chat.Chat()
    conn_a, conn_b = Connection(FakeTransport(), alice, {"room": "r"}), Connection(FakeTransport(), bob, {"room": "r"})
    for c in (conn_a, conn_b):
        c.deliver(t.Connected({}))
    await asyncio.sleep(0.01)
    stuck = asyncio.Event()

    written: list[bytes] = []

    async def reply(payload: bytes) -> None:  # bob's peer does not read: his writes wait for ever
        written.append(payload)
        await stuck.wait()

    bob._reply = reply  # type: ignore[method-assign]
    bob._join("r")
    alice._join("r")
    for i in range(5 * chat.MAX_BACKLOG):
        alice._broadcast(f"line {i}")
    await asyncio.sleep(0.01)
    # 5001 lines (alice joining, then hers): the first is being written, the backlog waits, the rest are missed
    assert written == [f"* {4 * chat.MAX_BACKLOG + 1} lines missed (you were not reading)\n".encode()]
    assert bob.backlog == chat.MAX_BACKLOG - 1 and len(conn_b._mailbox) == chat.MAX_BACKLOG - 1
    chat.ROOMS.clear()
