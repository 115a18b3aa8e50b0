"""The tunables of one SCTP association, with gen_sctp's names; times in milliseconds.

Defaults follow RFC 9260 §16 except ``rto_min`` (200 ms instead of 1 s, as Linux and usrsctp do: a 1 s floor
makes every loss on a fast path stall for a second) and ``recbuf``/``sndbuf`` (1 MiB each).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True, frozen=True)
class SctpConfig:
    # initmsg
    num_ostreams: int = 16
    max_instreams: int = 16
    max_attempts: int = 8
    max_init_timeo: int = 60_000
    # rtoinfo
    rto_initial: int = 1000
    rto_min: int = 200
    rto_max: int = 60_000
    # assocparams
    asocmaxrxt: int = 10
    cookie_life: int = 60_000
    #: send at once; otherwise small messages wait while data is in flight, to fill packets (Nagle)
    nodelay: bool = False
    #: largest DATA payload per chunk; 0 derives it from pmtu
    maxseg: int = 0
    #: seconds idle before a graceful close; 0 never
    autoclose: int = 0
    sackdelay: int = 200
    #: SACK at least every this many packets carrying DATA
    sack_freq: int = 2
    #: IP path MTU; an SCTP packet gets pmtu - IP header - the encapsulation's header (8 for UDP) bytes
    pmtu: int = 1280
    #: path MTU discovery (RFC 8899, ``pmtud``): from ``pmtu`` up to this IP MTU (and the interface's). Off in the
    #: bare core (the in-memory tests' fixed packets); the options (``options.core_config``) turn it on by default
    pmtud: bool = False
    maximum_mtu: int = 65535
    #: unanswered probes of one size before it is too big; T3 expiries in a row that mean a black hole
    mtu_discovery_missing_probe_count: int = 3
    #: seconds after a search ended below the maximum before it looks again (RFC 8899's raise timer)
    mtu_raise_s: float = 600.0
    #: idle time between HEARTBEATs; 0 disables them
    hbinterval: int = 30_000
    #: errors (T3 expiries, unanswered HEARTBEATs) after which a path is inactive (RFC 9260 Path.Max.Retrans)
    pathmaxrxt: int = 5
    #: the peer address to prefer as primary path when the peer has several (gen_sctp's ``primary_addr``)
    primary_addr: str = ""
    #: our addresses, listed in INIT and INIT-ACK when there are two or more (multi-homing)
    local_addresses: tuple[str, ...] = ()
    #: our receive window: the most user data we ever hold for the application
    recbuf: int = 1024 * 1024
    #: the most user data we queue for sending
    sndbuf: int = 1024 * 1024
    #: new-data packets sent per acknowledgement opportunity
    max_burst: int = 4
    #: the extensions offered (Linux's sysctl names): PR-SCTP (RFC 3758), stream reconfiguration (RFC 6525) and
    #: message interleaving (RFC 8260); an association uses one only when the peer offers it too
    prsctp_enable: bool = True
    reconf_enable: bool = True
    intl_enable: bool = True
    #: how the streams share the send queue (RFC 8260 §3, ``tx.scheduler``): ``rr`` round robin (a message per turn
    #: without I-DATA, a chunk with it), ``fcfs`` first come first served, ``prio`` strictly by stream priority,
    #: ``wfq`` weighted fair queueing by stream priority
    scheduler: str = "rr"
    #: what carries the packets (the driver's business): ``udp`` (RFC 6951) or ``none`` (protocol 132 on IP);
    #: the core only counts its header out of the path MTU
    encapsulation: str = "udp"
