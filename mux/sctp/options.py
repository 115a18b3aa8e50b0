"""SCTP options under gen_sctp's names, and their mapping onto the sans-IO core's SctpConfig."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from mux.schema import DriverOptions, ListenerBase, StrictModel
from mux.sctp.config import SctpConfig


class InitMsg(StrictModel):
    """gen_sctp #sctp_initmsg{}: what we offer in INIT / INIT-ACK."""

    num_ostreams: int = Field(default=16, ge=1, le=65535)
    max_instreams: int = Field(default=16, ge=1, le=65535)
    max_attempts: int = Field(default=8, ge=1)
    max_init_timeo: int = Field(default=60_000, gt=0, description="ms")


class RtoInfo(StrictModel):
    """gen_sctp #sctp_rtoinfo{}, in ms."""

    initial: int = Field(default=1000, gt=0)
    min: int = Field(default=200, gt=0)
    max: int = Field(default=60_000, gt=0)


class AssocParams(StrictModel):
    """gen_sctp #sctp_assocparams{}."""

    asocmaxrxt: int = Field(default=10, ge=1)
    cookie_life: int = Field(default=60_000, gt=0, description="ms")


PaddrFlag = Literal["hb_enable", "hb_disable", "sackdelay_enable", "sackdelay_disable", "pmtud_enable", "pmtud_disable"]


class PaddrParams(StrictModel):
    """gen_sctp #sctp_paddrparams{}: what each of the peer's addresses (paths) gets. A field left out keeps the
    option of the same meaning at the top level (``hbinterval``, ``sackdelay``, ``pmtu``)."""

    hbinterval: int | None = Field(default=None, ge=0, description="ms; 0 disables heartbeats")
    #: errors (T3 expiries, unanswered HEARTBEATs) after which a path is inactive and traffic fails over
    pathmaxrxt: int = Field(default=5, ge=0)
    pathmtu: int | None = Field(default=None, ge=576, le=65535)
    sackdelay: int | None = Field(default=None, ge=0, le=500, description="ms")
    #: gen_sctp's spp_flags: hb_disable and sackdelay_disable turn those off; pmtud_disable turns path MTU
    #: discovery off (``pathmtu``/``pmtu`` is used as given), pmtud_enable (the default) keeps it on
    flags: list[PaddrFlag] = Field(default_factory=list)


class SctpOptions(DriverOptions):
    initmsg: InitMsg = Field(default_factory=InitMsg)
    rtoinfo: RtoInfo = Field(default_factory=RtoInfo)
    assocparams: AssocParams = Field(default_factory=AssocParams)
    #: send at once instead of waiting to fill a packet
    nodelay: bool = False
    #: largest DATA chunk payload; 0 derives it from pmtu
    maxseg: int = Field(default=0, ge=0)
    #: close an association idle this many seconds; 0 never
    autoclose: int = Field(default=0, ge=0)
    sackdelay: int = Field(default=200, ge=0, le=500, description="ms")
    #: IP path MTU; an SCTP packet is at most pmtu - IP header - 8 (UDP; 0 with ``encapsulation: none``)
    pmtu: int = Field(default=1280, ge=576, le=65535)
    hbinterval: int = Field(default=30_000, ge=0, description="ms; 0 disables heartbeats")
    #: path MTU discovery (RFC 8899) searches from ``pmtu`` up to this IP MTU and the interface's; at or below
    #: ``pmtu`` it is off (as ``paddrparams: {flags: [pmtud_disable]}``)
    maximum_mtu: int = Field(default=65535, ge=576, le=65535)
    #: quicer's names: a search that ended below the maximum looks again after this long (RFC 8899's raise
    #: timer); unanswered probes of one size before it counts as too big (also: T3s in a row that are a black hole)
    mtu_discovery_search_complete_timeout_us: int = Field(default=600_000_000, gt=0)
    mtu_discovery_missing_probe_count: int = Field(default=3, ge=1, le=100)
    #: our receive window: the most we ever buffer for the application
    recbuf: int = Field(default=1024 * 1024, ge=4096)
    #: the most we queue for sending; stream.send waits above half of it
    sndbuf: int = Field(default=1024 * 1024, ge=4096)
    #: the extensions offered in INIT/INIT-ACK (Linux's sysctl names); each is used only if the peer offers it too
    prsctp_enable: bool = True
    reconf_enable: bool = True
    intl_enable: bool = True
    #: how the streams share the send queue (RFC 8260 §3): round robin (a message per turn, or with I-DATA a chunk),
    #: first come first served, strict priority, or weighted fair queueing by ``stream.priority``
    scheduler: Literal["rr", "fcfs", "prio", "wfq"] = "rr"
    #: per path: heartbeats, failure threshold, MTU, SACK delay (multi-homing)
    paddrparams: PaddrParams = Field(default_factory=PaddrParams)
    #: gen_sctp's primary_addr: the peer address (IP) data goes to, when the peer has several
    primary_addr: str | None = None
    #: what carries the SCTP packets: ``udp`` (RFC 6951, the default: no privileges, passes NATs) or ``none``,
    #: SCTP directly on IP as protocol 132 (raw sockets: root or CAP_NET_RAW), which kernel SCTP peers speak
    encapsulation: Literal["udp", "none"] = "udp"


def _hosts(value: object) -> object:
    """One address, or a list of them (a multi-homed endpoint: each is bound and listed in INIT / INIT-ACK)."""
    if isinstance(value, list):
        if not value:
            raise ValueError("expected an address or a non-empty list of addresses")
        if len(value) > 8:
            raise ValueError("expected at most 8 addresses")
        if len(set(value)) != len(value):
            raise ValueError("expected distinct addresses")
    return value


def host_list(host: str | list[str] | None) -> list[str]:
    return [] if host is None else [host] if isinstance(host, str) else list(host)


class SctpListenerOptions(ListenerBase, SctpOptions):
    transport: Literal["sctp"] = "sctp"
    #: one address, or several for a multi-homed endpoint (each bound, all announced)
    host: str | list[str] = "127.0.0.1"  # type: ignore[assignment]

    _check_hosts = field_validator("host")(_hosts)
    #: the UDP port (RFC 6951 registers 9899); none with ``encapsulation: none``
    port: int = Field(default=9899, ge=0, le=65535)
    #: the SCTP port (inside the UDP encapsulation, or on IP); 0 only on IP: a free one, as UDP's port 0
    #: (``mux.preflight`` checks these against the encapsulation)
    sctp_port: int = Field(default=7, ge=0, le=65535)


class SctpClientOptions(SctpOptions):
    #: the server's SCTP port
    sctp_port: int = Field(default=7, ge=1, le=65535)
    #: our SCTP port; 0 picks an ephemeral one
    local_sctp_port: int = Field(default=0, ge=0, le=65535)
    #: our UDP port; 0 picks an ephemeral one (usrsctp programs need to know it: set it); none on IP
    local_udp_port: int = Field(default=0, ge=0, le=65535)
    #: our address, or several (multi-homing: each bound to the same UDP port, all announced in the INIT)
    local_host: str | list[str] | None = None
    mode: Literal["one-to-one"] = "one-to-one"

    _check_hosts = field_validator("local_host")(_hosts)


def core_config(options: SctpOptions, local_hosts: list[str] | None = None) -> SctpConfig:
    """The sans-IO core's settings from the YAML/client options; ``local_hosts``, the addresses bound."""
    paddr = options.paddrparams
    flags = set(paddr.flags)
    hbinterval = options.hbinterval if paddr.hbinterval is None else paddr.hbinterval
    sackdelay = options.sackdelay if paddr.sackdelay is None else paddr.sackdelay
    pmtu = options.pmtu if paddr.pathmtu is None else paddr.pathmtu
    return SctpConfig(
        num_ostreams=options.initmsg.num_ostreams,
        max_instreams=options.initmsg.max_instreams,
        max_attempts=options.initmsg.max_attempts,
        max_init_timeo=options.initmsg.max_init_timeo,
        rto_initial=options.rtoinfo.initial,
        rto_min=options.rtoinfo.min,
        rto_max=options.rtoinfo.max,
        asocmaxrxt=options.assocparams.asocmaxrxt,
        cookie_life=options.assocparams.cookie_life,
        nodelay=options.nodelay,
        maxseg=options.maxseg,
        autoclose=options.autoclose,
        sackdelay=0 if "sackdelay_disable" in flags else sackdelay,
        pmtu=pmtu,
        pmtud="pmtud_disable" not in flags and options.maximum_mtu > pmtu,
        maximum_mtu=options.maximum_mtu,
        mtu_discovery_missing_probe_count=options.mtu_discovery_missing_probe_count,
        mtu_raise_s=options.mtu_discovery_search_complete_timeout_us / 1e6,
        hbinterval=0 if "hb_disable" in flags else hbinterval,
        pathmaxrxt=paddr.pathmaxrxt,
        primary_addr=options.primary_addr or "",
        local_addresses=tuple(local_hosts) if local_hosts and len(local_hosts) > 1 else (),
        recbuf=options.recbuf,
        sndbuf=options.sndbuf,
        prsctp_enable=options.prsctp_enable,
        reconf_enable=options.reconf_enable,
        intl_enable=options.intl_enable,
        scheduler=options.scheduler,
        encapsulation=options.encapsulation,
    )
