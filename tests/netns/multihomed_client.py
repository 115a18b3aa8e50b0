"""A multi-homed SCTP client for tests/test_sctp_multihoming.py, run inside a network namespace.

Sends ``count`` numbered messages, one every ``interval`` seconds, on one stream to an echo server, and prints one
JSON line at the end: the echoes in arrival order, and every path event with its time since the first message.
Usage: python multihomed_client.py HOST UDP_PORT LOCAL1,LOCAL2 COUNT INTERVAL_S OPTIONS_JSON
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import mux
from mux import Connection, ConnectionBehaviour, Stream

START = time.monotonic()
EVENTS: list[tuple[float, str, Any, Any]] = []
ECHOES: list[str] = []


def _at() -> float:
    return round(time.monotonic() - START, 3)


class Client(ConnectionBehaviour):
    def path_changed(self, conn: Connection, address: Any, state: str, props: dict[str, Any]) -> None:
        EVENTS.append((_at(), "path_changed", list(address), state))

    def peer_address_changed(self, conn: Connection, address: Any) -> None:
        EVENTS.append((_at(), "peer_address_changed", list(address), None))

    def stream_data(self, stream: Stream, data: bytes, fin: bool, props: dict[str, Any]) -> None:
        ECHOES.append(data.decode())


async def main() -> None:
    global START
    host, port, local, count, interval, options = sys.argv[1:7]
    opts = json.loads(options)
    opts["local_host"] = local.split(",")
    if opts.get("encapsulation") == "none":  # SCTP on IP: no UDP port, the server's SCTP port instead
        opts["sctp_port"] = int(port)
        url = f"sctp://{host}"
    else:
        url = f"sctp://{host}:{port}"
    conn = await mux.connect(Client, url, options=opts)
    stream = conn.open_stream()
    START = time.monotonic()
    print("started", flush=True)
    for i in range(int(count)):
        await stream.send(b"m%05d" % i)
        await asyncio.sleep(float(interval))
    deadline = time.monotonic() + 15
    while len(ECHOES) < int(count) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    stats = conn.stats()
    print(json.dumps({"echoes": ECHOES, "events": EVENTS, "paths": stats["paths"], "peer": list(stats["peer"])}))
    conn.close(0, "done")
    await asyncio.sleep(0.2)


asyncio.run(main())
