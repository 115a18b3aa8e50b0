"""A WebTransport client on aioquic's HTTP/3 layer, for the tests: sessions, streams, datagrams, close capsules."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aioquic.asyncio import connect as aioquic_connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3 import events as h3e
from aioquic.h3.connection import H3Connection
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import QuicEvent, StreamReset

from mux.quic import wt_wire as wire
from mux.quic.wt_session import open_webtransport_stream


class WebTransportClient(QuicConnectionProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.h3 = H3Connection(self._quic, enable_webtransport=True)
        #: response headers per request stream
        self.responses: dict[int, asyncio.Future[dict[bytes, bytes]]] = {}
        #: data of plain responses, and capsule bytes of sessions, per request stream
        self.bodies: dict[int, bytearray] = {}
        self.body_ended: dict[int, asyncio.Event] = {}
        #: WebTransport stream data per stream
        self.received: dict[int, bytearray] = {}
        self.ended: dict[int, asyncio.Event] = {}
        #: streams the server opened, in order
        self.server_streams: asyncio.Queue[int] = asyncio.Queue()
        self.datagrams: dict[int, asyncio.Queue[bytes]] = {}
        self.resets: dict[int, int] = {}

    def _ended(self, table: dict[int, asyncio.Event], stream_id: int) -> asyncio.Event:
        return table.setdefault(stream_id, asyncio.Event())

    def request(self, path: str, method: str = "CONNECT", origin: str = "https://example.test") -> int:
        host, port = self._quic._network_paths[0].addr[:2]
        stream_id = self._quic.get_next_available_stream_id()
        headers = [(b":method", method.encode()), (b":scheme", b"https"), (b":authority", f"{host}:{port}".encode())]
        headers.append((b":path", path.encode()))
        if method == "CONNECT":
            headers.append((b":protocol", b"webtransport"))
        headers.append((b"origin", origin.encode()))
        self.responses[stream_id] = asyncio.get_running_loop().create_future()
        self.h3.send_headers(stream_id, headers, end_stream=method != "CONNECT")
        self.datagrams[stream_id] = asyncio.Queue()
        self.transmit()
        return stream_id

    async def session(self, path: str, **kwargs: Any) -> tuple[int, int]:
        """Open a session; returns its id and the response status."""
        stream_id = self.request(path, **kwargs)
        headers = await asyncio.wait_for(self.responses[stream_id], 5)
        return stream_id, int(headers[b":status"])

    def open(self, session_id: int, unidirectional: bool = False) -> int:
        stream_id = open_webtransport_stream(self.h3, session_id, unidirectional)
        self.transmit()
        return stream_id

    def send(self, stream_id: int, data: bytes, fin: bool = False) -> None:
        self._quic.send_stream_data(stream_id, data, fin)
        self.transmit()

    def send_datagram(self, session_id: int, data: bytes) -> None:
        self.h3.send_datagram(session_id, data)
        self.transmit()

    def close_session(self, session_id: int, code: int, reason: str) -> None:
        self.h3.send_data(session_id, wire.close_capsule(code, reason), end_stream=True)
        self.transmit()

    async def read(self, stream_id: int, timeout: float = 5) -> bytes:
        await asyncio.wait_for(self._ended(self.ended, stream_id).wait(), timeout)
        return bytes(self.received.get(stream_id, b""))

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, StreamReset):
            self.resets[event.stream_id] = event.error_code
        for http in self.h3.handle_event(event):
            if isinstance(http, h3e.HeadersReceived):
                future = self.responses.get(http.stream_id)
                if future is not None and not future.done():
                    future.set_result(dict(http.headers))
                if http.stream_ended:
                    self._ended(self.body_ended, http.stream_id).set()
            elif isinstance(http, h3e.DataReceived):
                self.bodies.setdefault(http.stream_id, bytearray()).extend(http.data)
                if http.stream_ended:
                    self._ended(self.body_ended, http.stream_id).set()
            elif isinstance(http, h3e.WebTransportStreamDataReceived):
                if http.stream_id not in self.received:
                    self.received[http.stream_id] = bytearray()
                    if http.stream_id % 4 in (1, 3):  # the server opened it
                        self.server_streams.put_nowait(http.stream_id)
                self.received[http.stream_id].extend(http.data)
                if http.stream_ended:
                    self._ended(self.ended, http.stream_id).set()
            elif isinstance(http, h3e.DatagramReceived):
                self.datagrams.setdefault(http.stream_id, asyncio.Queue()).put_nowait(http.data)


@asynccontextmanager
async def wt_connect(host: str, port: int) -> AsyncIterator[WebTransportClient]:
    config = QuicConfiguration(
        is_client=True, alpn_protocols=["h3"], verify_mode=ssl.CERT_NONE, max_datagram_frame_size=65536
    )
    async with aioquic_connect(host, port, configuration=config, create_protocol=WebTransportClient) as client:
        assert isinstance(client, WebTransportClient)
        yield client
