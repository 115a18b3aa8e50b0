"""``mux client``: a small interactive client, like usrsctp's ``client`` program."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from mux import preflight
from mux.behaviour import ConnectionBehaviour
from mux.client import connect
from mux.connection import Connection
from mux.stream import Stream
from mux.transport import TransportError


class LineClient(ConnectionBehaviour):
    """Prints what comes back; counts bytes so EOF can wait for the echo to finish."""

    def init(self, opts: dict[str, Any]) -> None:
        self.received = 0
        self.peer_done = asyncio.Event()
        self.progress = asyncio.Event()

    def _show(self, data: bytes) -> None:
        self.received += len(data)
        sys.stdout.buffer.write(data if data.endswith(b"\n") else data + b"\n")
        sys.stdout.flush()
        self.progress.set()

    def stream_data(self, stream: Stream, data: bytes, fin: bool, props: dict[str, Any]) -> None:
        if data:
            self._show(data)
        if fin:
            self.peer_done.set()

    def dgram_recv(self, conn: Connection, data: bytes, flags: int) -> None:
        self._show(data)

    def shutdown(self, conn: Connection, error_code: int) -> None:
        print(f"[peer closed the connection, code {error_code}]", file=sys.stderr)

    def transport_shutdown(self, conn: Connection, props: dict[str, Any]) -> None:
        print(f"[connection lost: {props}]", file=sys.stderr)

    def closed(self, conn: Connection, props: dict[str, Any]) -> None:
        self.peer_done.set()


def file_problems(url: str, options: dict[str, Any]) -> list[str]:
    """The QUIC files a client reads, checked before connecting.

    aioquic opens the CA file only when the server's certificate arrives, and a bad one then raises
    out of the datagram callback mid-handshake: say what is wrong with it up front instead.
    """
    if url.split(":", 1)[0] != "quic":
        return []
    query = dict(parse_qsl(urlsplit(url).query))

    def named(key: str) -> tuple[Path | None, str]:
        if key in options:
            return Path(options[key]), f"--{key}"
        return (Path(query[key]), key) if key in query else (None, key)

    problems = preflight.Problems()
    cafile, ca_where = named("cacertfile")
    if cafile is not None:
        preflight.check_ca_file(cafile, ca_where, problems)
    certfile, cert_where = named("certfile")
    keyfile, key_where = named("keyfile")
    if certfile is not None:
        preflight.check_certificate_chain(certfile, keyfile, problems, cert_where, key_where)
    elif keyfile is not None:
        problems.add(key_where, "set without certfile; expected both")
    ticket, ticket_where = named("session_ticket_file")
    if ticket is not None:
        preflight.check_writable(ticket, ticket_where, False, problems)
    return [f"{key}: {message}" for key, message in problems.items]


async def run_client(args: argparse.Namespace) -> int:
    options: dict[str, Any] = {}
    scheme = args.url.split(":", 1)[0]
    if scheme == "quic":
        if args.alpn:
            options["alpn"] = args.alpn.split(",")
        if args.insecure:
            options["verify"] = "none"
        if args.cacertfile:
            options["cacertfile"] = args.cacertfile
    if scheme == "sctp" and args.sctp_port is not None:
        options["sctp_port"] = args.sctp_port
    if scheme == "sctp" and args.encapsulation is not None:
        options["encapsulation"] = args.encapsulation
    problems = file_problems(args.url, options)
    if problems:
        print("\n".join(f"mux client: {problem}" for problem in problems), file=sys.stderr)
        return 2
    behaviour = LineClient()
    try:
        conn = await connect(behaviour, args.url, options=options)
    except (OSError, TransportError, ValueError, KeyError) as exc:
        print(f"mux client: {exc}", file=sys.stderr)
        return 1
    print(f"[connected to {args.url} over {conn.transport}, alpn {conn.alpn}]", file=sys.stderr)
    stream = None if args.datagram else conn.open_stream()
    loop = asyncio.get_running_loop()
    sent = 0
    try:
        while True:
            line = await loop.run_in_executor(None, sys.stdin.buffer.readline)
            if not line:
                break
            if conn.state != "connected":
                break
            if stream is None:
                conn.send_datagram(line.rstrip(b"\n"))
                sent += len(line.rstrip(b"\n"))
            else:
                await stream.send(line)
                sent += len(line)
        if stream is not None and conn.state == "connected" and conn.transport == "quic":
            await stream.send(b"", fin=True)
        deadline = loop.time() + args.wait
        while behaviour.received < sent and conn.state == "connected" and loop.time() < deadline:
            behaviour.progress.clear()
            try:
                await asyncio.wait_for(behaviour.progress.wait(), deadline - loop.time())
            except TimeoutError:
                break
    except TransportError as exc:
        print(f"mux client: {exc}", file=sys.stderr)
        return 1
    finally:
        conn.close()
        await asyncio.wait_for(conn.wait_closed(), 5.0)
    return 0 if behaviour.received >= sent else 3
