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
class PathChanged:
    """A peer address changed state (``paths``): ``added`` (listed by the peer, unconfirmed), ``confirmed`` (its
    first HEARTBEAT-ACK), ``unreachable`` (more than ``pathmaxrxt`` errors), ``available`` (it answers again)."""

    address: tuple[object, ...]
    state: str


@dataclass(slots=True)
class PrimaryChanged:
    """Data goes to another peer address from now on (a failover, a path coming back, or ``primary_addr``)."""

    address: tuple[object, ...]
    previous: tuple[object, ...]


@dataclass(slots=True)
class DataReceived:
    """One complete user message."""

    stream_id: int
    data: bytes
    ppid: int
    unordered: bool


@dataclass(slots=True)
class StreamOpened:
    """The peer's first chunk on a stream since it last reset it (ex_sctp's ``stream_opened``), before any of that
    stream's ``DataReceived``. Only with ``Association.announce_streams``."""

    stream_id: int


@dataclass(slots=True)
class StreamReset:
    """The peer reset its outgoing streams (RFC 6525), our incoming ones: every message it sent on them before
    has been delivered, and the next one starts a new use of the stream (ex_sctp's ``stream_closed``)."""

    stream_ids: list[int]


@dataclass(slots=True)
class StreamResetRequested:
    """The peer asked us to reset our outgoing streams (RFC 6525 Incoming SSN Reset Request): their unsent messages
    are dropped and the reset is on its way (QUIC's STOP_SENDING). Streams whose reset was under way already are
    not listed: nothing changes for them."""

    stream_ids: list[int]


@dataclass(slots=True)
class OutgoingStreamsReset:
    """The peer performed the reset of our outgoing streams: their next message has SSN 0."""

    stream_ids: list[int]


@dataclass(slots=True)
class StreamResetFailed:
    """The peer refused a reset we asked for (``result`` names its answer); ``incoming`` when it was our request
    that the peer reset its own outgoing streams. Failed outgoing streams stay in use: their SSNs go on."""

    stream_ids: list[int]
    result: str
    incoming: bool = False


@dataclass(slots=True)
class StreamClosed:
    """Both directions of a stream are reset (or were never used): its id can be opened again."""

    stream_id: int


@dataclass(slots=True)
class StreamsAdded:
    """RFC 6525 Add Streams: the stream counts grew by ``outbound`` and ``inbound``, to the totals given."""

    outbound: int
    inbound: int
    outbound_streams: int
    inbound_streams: int


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
    | StreamOpened
    | StreamReset
    | StreamResetRequested
    | OutgoingStreamsReset
    | StreamResetFailed
    | StreamClosed
    | StreamsAdded
    | SendQueueDrained
    | ShutdownReceived
    | AssociationAborted
    | PeerError
    | AssociationClosed
    | PathChanged
    | PrimaryChanged
)
