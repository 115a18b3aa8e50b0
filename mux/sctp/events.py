"""What the sans-IO SCTP core reports to its driver through ``next_event()``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mux.sctp.params import ErrorCause

if TYPE_CHECKING:
    from mux.sctp.association import Association


@dataclass(slots=True)
class AssociationUp:
    outbound_streams: int
    inbound_streams: int
    peer_rwnd: int


@dataclass(slots=True)
class AssociationRestarted:
    """The peer restarted (§5.2.4 action A): our stream state was reset under the same association."""

    outbound_streams: int
    inbound_streams: int


@dataclass(slots=True)
class DataReceived:
    """One complete user message."""

    stream_id: int
    data: bytes
    ppid: int
    unordered: bool


@dataclass(slots=True)
class StreamReset:
    """Reserved for RFC 6525 stream reset; not emitted yet."""

    stream_id: int


@dataclass(slots=True)
class SendQueueDrained:
    """Queued outbound bytes fell to half of sndbuf after having been above it."""


@dataclass(slots=True)
class ShutdownReceived:
    """The peer began a graceful close; it sends no new data."""


@dataclass(slots=True)
class AssociationAborted:
    reason: str
    causes: list[ErrorCause] = field(default_factory=list)


@dataclass(slots=True)
class PeerError:
    causes: list[ErrorCause]


@dataclass(slots=True)
class AssociationClosed:
    """Always the association's last event."""


@dataclass(slots=True)
class NewAssociation:
    """Endpoint event: a valid COOKIE-ECHO was admitted and created this association."""

    association: Association


@dataclass(slots=True)
class PeerAddressChanged:
    """Endpoint event: a packet carrying this association's own tag came from a new UDP port of the peer's host,
    and the association now sends there (RFC 6951 §5.4: a NAT rebinding). ``previous`` is where it sent before."""

    association: Association
    previous: tuple[object, ...]


#: what ``Endpoint.next_event()`` reports
EndpointEvent = NewAssociation | PeerAddressChanged

Event = (
    AssociationUp
    | AssociationRestarted
    | DataReceived
    | StreamReset
    | SendQueueDrained
    | ShutdownReceived
    | AssociationAborted
    | PeerError
    | AssociationClosed
)
