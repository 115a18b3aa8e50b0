"""The handshake behaviour: what runs on an ICE path before SCTP starts, in the shape of Membrane's
``Membrane.ICE.Handshake``.

A handshake module implements three callbacks, each returning one of the results below:

* ``init(opts)`` -> ``Started(init_data, state)`` or ``Finished(data)`` (nothing to do at all);
* ``connection_ready(state)``: ICE has a nominated path; a client starts here, a server may return ``Ok()``;
* ``recv_from_peer(state, data)``: a datagram for the handshake arrived.

``Ok(packets)`` sends packets and carries on; ``FinishedWithPackets(data, packets)`` sends final packets and is
done; ``Finished(data)`` is done. ``data`` is what the handshake produced: here a ``Channel``, the record layer
SCTP runs over. Optional for a module that must retransmit by itself (DTLS): ``get_timer(state)`` (a deadline on
the loop's clock, or None) and ``handle_timer(state, now)`` (a result as above).

DTLS (``mux.webrtc.dtls.DtlsHandshake``) is the first implementation; ``NoHandshake`` is the trivial one, for tests:
SCTP packets then travel in the clear.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(slots=True)
class Started:
    init_data: Any
    state: Any


@dataclass(slots=True)
class Ok:
    packets: list[bytes] = field(default_factory=list)


@dataclass(slots=True)
class FinishedWithPackets:
    data: Channel
    packets: list[bytes]


@dataclass(slots=True)
class Finished:
    data: Channel


Result = Ok | FinishedWithPackets | Finished


class Channel(Protocol):
    """The record layer a finished handshake leaves: SCTP packets in and out of UDP payloads."""

    def seal(self, data: bytes) -> bytes:
        """One UDP payload carrying ``data``."""
        ...

    def open(self, payload: bytes) -> tuple[list[bytes], list[bytes]]:
        """What one UDP payload holds: (application data, datagrams to send back, e.g. retransmitted flights)."""
        ...

    def close(self) -> list[bytes]:
        """Datagrams that end the channel (a DTLS close_notify alert)."""
        ...


class HandshakeModule(Protocol):
    def init(self, opts: dict[str, Any]) -> Started | Finished: ...

    def connection_ready(self, state: Any) -> Result: ...

    def recv_from_peer(self, state: Any, data: bytes) -> Result: ...


class PlainChannel:
    """No record layer: a payload is the SCTP packet itself."""

    def seal(self, data: bytes) -> bytes:
        return data

    def open(self, payload: bytes) -> tuple[list[bytes], list[bytes]]:
        return [payload], []

    def close(self) -> list[bytes]:
        return []


class NoHandshake:
    """The trivial handshake: finished at ``init``; SCTP runs in the clear (tests only: nothing is authenticated)."""

    def init(self, opts: dict[str, Any]) -> Started | Finished:
        return Finished(PlainChannel())

    def connection_ready(self, state: Any) -> Result:
        return Finished(PlainChannel())

    def recv_from_peer(self, state: Any, data: bytes) -> Result:
        return Finished(PlainChannel())
