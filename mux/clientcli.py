"""``mux client``: a small interactive client, like usrsctp's ``client`` program."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import threading
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from mux import preflight
from mux.behaviour import ConnectionBehaviour
from mux.client import connect
from mux.connection import Connection, ConnectionClosed
from mux.stream import Stream
from mux.transport import TransportError


class LineClient(ConnectionBehaviour):
    """Prints what comes back; counts bytes so EOF can wait for the echo to finish."""

    def init(self, opts: dict[str, Any]) -> None:
        self.received = 0
        self.peer_done = asyncio.Event()
        self.gone = asyncio.Event()
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
        self.gone.set()


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
            options["insecure"] = True
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
        conn = await connect(behaviour, args.url, options=options, timeout=args.timeout)
    except (OSError, TransportError, ValueError, KeyError) as exc:
        print(f"mux client: {exc}", file=sys.stderr)
        return 1
    print(f"[connected to {args.url} over {conn.transport}, alpn {conn.alpn}]", file=sys.stderr)
    stream = None if args.datagram else conn.open_stream()
    loop = asyncio.get_running_loop()
    lines = stdin_lines(loop)
    sent = 0
    try:
        while True:
            line = await next_line(lines, behaviour.gone)
            if line is None:  # the connection ended: nothing more can be sent, and nothing will come back
                props = conn.close_props or {}
                return 0 if props.get("error") is None and not props.get("error_code") else 1
            if not line:
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
    except (TransportError, ConnectionClosed) as exc:
        print(f"mux client: {exc}", file=sys.stderr)
        return 1
    finally:
        conn.close()
        await asyncio.wait_for(conn.wait_closed(), 5.0)
    return 0 if behaviour.received >= sent else 3


def stdin_lines(loop: asyncio.AbstractEventLoop) -> asyncio.Queue[bytes]:
    """Stdin's lines (b"" at EOF), read by a daemon thread.

    Not the loop's default executor: a thread blocked in ``readline`` there is joined when the loop closes, so
    Ctrl-C waited for the next Enter. A daemon thread is left behind at exit; it reads the file descriptor
    (``os.read``), not ``sys.stdin``, whose buffer lock it would hold while the interpreter shuts down.
    """
    queue: asyncio.Queue[bytes] = asyncio.Queue()

    def put(line: bytes) -> bool:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, line)
        except RuntimeError:  # the loop is closed: the client is exiting
            return False
        return True

    def read() -> None:
        pending = b""
        while True:
            try:
                chunk = os.read(sys.stdin.fileno(), 65536)
            except (OSError, ValueError):
                chunk = b""
            if not chunk:
                if pending:
                    put(pending)
                put(b"")
                return
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                if not put(line + b"\n"):
                    return

    threading.Thread(target=read, name="mux-client-stdin", daemon=True).start()
    return queue


async def next_line(lines: asyncio.Queue[bytes], gone: asyncio.Event) -> bytes | None:
    """The next stdin line, or None once the connection has closed (the peer closed it, or it was lost)."""
    if gone.is_set():
        return None
    get = asyncio.ensure_future(lines.get())
    done = asyncio.ensure_future(gone.wait())
    try:
        await asyncio.wait((get, done), return_when=asyncio.FIRST_COMPLETED)
    finally:
        done.cancel()
    if get.done():
        return get.result()
    get.cancel()
    return None
