"""A plain UDP relay for end-to-end tests: one upstream socket per client address (like ImpairProxy), with hooks
that see every datagram each way; ``up`` may drop one from the client by returning False."""

from __future__ import annotations

import asyncio
import socket
from typing import Any, Self


class UdpRelay:
    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self._socks: dict[Any, socket.socket] = {}
        self._listen = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._listen.setblocking(False)
        self._listen.bind(("127.0.0.1", 0))
        self.port: int = self._listen.getsockname()[1]

    def up(self, data: bytes, addr: Any) -> bool:
        """A datagram from client ``addr``; False drops it."""
        return True

    def down(self, data: bytes, addr: Any) -> None:
        """A datagram from the server to client ``addr``."""

    async def __aenter__(self) -> Self:
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._listen.fileno(), self._from_client)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for sock in [*self._socks.values(), self._listen]:
            self._loop.remove_reader(sock.fileno())
            sock.close()

    def _from_client(self) -> None:
        while True:
            try:
                data, addr = self._listen.recvfrom(65536)
            except (BlockingIOError, InterruptedError):
                return
            if addr not in self._socks:
                sock = self._socks[addr] = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sock.setblocking(False)
                sock.connect(self.upstream)
                self._loop.add_reader(sock.fileno(), self._from_server, sock, addr)
            if not self.up(data, addr):
                continue
            try:
                self._socks[addr].send(data)
            except OSError:
                pass  # the server is gone (ECONNREFUSED from an earlier datagram): lost, as on a real path

    def _from_server(self, sock: socket.socket, addr: Any) -> None:
        while True:
            try:
                data = sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue  # an ICMP error reported on this socket; the next recv goes on
            self.down(data, addr)
            try:
                self._listen.sendto(data, addr)
            except OSError:
                pass


class RebindingRelay(UdpRelay):
    """A relay whose server-facing port changes on ``rebind()``: a NAT that forgot its mapping."""

    def rebind(self) -> None:
        for addr, old in list(self._socks.items()):
            self._loop.remove_reader(old.fileno())
            old.close()
            sock = self._socks[addr] = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setblocking(False)
            sock.connect(self.upstream)
            self._loop.add_reader(sock.fileno(), self._from_server, sock, addr)

    def server_facing_ports(self) -> set[int]:
        return {sock.getsockname()[1] for sock in self._socks.values()}
