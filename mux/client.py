"""Run a behaviour as a client, over any transport."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from pydantic import ValidationError

from mux import registry
from mux.behaviour import ConnectionBehaviour
from mux.connection import Connection, ConnectionClosed
from mux.transport import TransportConnection


class _ClientSupervisor:
    """Resolves ``connect`` once the handshake finishes or fails, and releases the socket at the end."""

    def __init__(self) -> None:
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # a failure after connect() gave up (timeout, cancellation) must not be reported as never retrieved
        self.ready.add_done_callback(lambda f: f.cancelled() or f.exception())
        self.release: Any = None

    def _connected(self, conn: Connection) -> None:
        if not self.ready.done():
            self.ready.set_result(None)

    def _rejected(self, conn: Connection) -> None:
        pass

    def _closed(self, conn: Connection) -> None:
        if not self.ready.done():
            props = conn.close_props or {}
            self.ready.set_exception(
                ConnectionClosed(f"connection failed: {props.get('reason') or props.get('error') or props}")
            )
        if self.release is not None:
            # let the transport send its last datagrams (e.g. CONNECTION_CLOSE) before the socket goes
            asyncio.get_running_loop().call_later(0.05, lambda: asyncio.ensure_future(self.release()))


async def connect(
    behaviour: type[ConnectionBehaviour] | ConnectionBehaviour,
    url: str | None = None,
    *,
    transport: str | None = None,
    host: str | None = None,
    port: int | None = None,
    options: dict[str, Any] | None = None,
    opts: dict[str, Any] | None = None,
    timeout: float = 10.0,
) -> Connection:
    """Connect and run ``behaviour`` on the client side; returns once ``connected`` is queued.

    ``url`` is ``quic://host:port?alpn=echo`` or ``sctp://host:udp_port?sctp_port=7``; query items
    are transport options (or pass ``options=``). ``opts`` go to the behaviour's ``init``. QUIC checks the
    server's certificate; ``?insecure=1`` (``options={"insecure": True}``) skips that, for a self-signed test
    server. ``timeout``: seconds for the handshake, then ConnectionClosed.
    """
    options = dict(options or {})
    if url is not None:
        parts = urlsplit(url)
        transport = transport or parts.scheme
        host = host or parts.hostname
        port = port or parts.port
        for key, value in parse_qsl(parts.query):
            options.setdefault(key, value.split(",") if key == "alpn" else value)
    if not transport or not host:
        raise ValueError("connect needs a transport and a host (e.g. 'quic://127.0.0.1:4433')")
    plugin = registry.get(transport)
    try:
        client_options = plugin.client_model.model_validate(options)
    except ValidationError as exc:
        problems = "; ".join(
            (f"{'.'.join(map(str, e['loc']))}: " if e["loc"] else "") + str(e["msg"]) for e in exc.errors()
        )
        raise ValueError(f"bad {transport} client options: {problems}") from None
    instance = behaviour() if isinstance(behaviour, type) else behaviour
    supervisor = _ClientSupervisor()
    holder: list[Connection] = []

    def make_sink(tconn: TransportConnection) -> Connection:
        conn = Connection(tconn, instance, opts or {}, supervisor=supervisor)
        holder.append(conn)
        return conn

    _tconn, release = await plugin.connect(client_options, host, port or plugin.default_port, make_sink)
    supervisor.release = release
    conn = holder[0]
    try:
        await asyncio.wait_for(asyncio.shield(supervisor.ready), timeout)
    except TimeoutError:
        conn.abort("connect timeout")
        await release()
        raise ConnectionClosed(f"{transport}://{host}:{port}: no handshake within {timeout}s") from None
    except asyncio.CancelledError:
        conn.abort("connect cancelled")
        await release()
        raise
    return conn
