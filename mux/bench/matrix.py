"""The benchmark matrix file (conf/ab.yaml): transports x impairment profiles x workloads, and the run order.

Impairment knobs take the same values as ``mux impair`` (``loss: 5%``, ``delay: 10ms``, ``rate: 50mbit``) so one
vocabulary serves both. The packet size is one number, ``packet.udp_payload``, turned into each transport's own
option, so no transport bundles into bigger packets than the other.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from mux.impair.cli import KNOBS
from mux.impair.model import Impairment
from mux.schema import StrictModel

#: IPv4 header + UDP header: SCTP's pmtu is an IP MTU, aioquic's max_datagram_size a UDP payload
IPV4_UDP_OVERHEAD = 28
#: SCTP's recbuf and sndbuf when not set (mux/sctp/options.py)
SCTP_BUFFER_DEFAULT = 1024 * 1024
QUIC_ALPN = "mux-bench"
#: options the bench sets itself; a transport_options entry may not override them
RESERVED_OPTIONS = frozenset(
    {"transport", "host", "port", "name", "alpn", "max_datagram_size", "pmtu", "maxseg", "maximum_mtu", "minimum_mtu"}
)

_KNOB_BY_NAME = {knob.flag.replace("-", "_"): knob for knob in KNOBS if knob.field}
# the proxy's MTU is the packet size (set by the bench); the queue knob has its own two-field type
_KNOB_BY_NAME.pop("mtu", None)


class BenchConfigError(Exception):
    """A bad matrix file; ``str()`` is the whole message for the user."""


class Knobs(StrictModel):
    """Impairment of one direction, in ``mux impair``'s units; values stay as written and are parsed when used."""

    loss: str | float | None = None
    ge_p: str | float | None = None
    ge_r: str | float | None = None
    ge_loss_good: str | float | None = None
    ge_loss_bad: str | float | None = None
    delay: str | float | None = None
    jitter: str | float | None = None
    jitter_dist: str | None = None
    reorder: str | float | None = None
    reorder_delay: str | float | None = None
    duplicate: str | float | None = None
    rate: str | float | None = None
    limit: str | float | None = None

    @field_validator("*", mode="before")
    @classmethod
    def _parses(cls, value: Any, info: Any) -> Any:
        if value is not None and info.field_name in _KNOB_BY_NAME:
            _parse_knob(info.field_name, value)
        return value

    def values(self) -> dict[str, Any]:
        """Impairment field -> parsed value, for the knobs that are set."""
        out: dict[str, Any] = {}
        for name in Knobs.model_fields:
            raw = getattr(self, name)
            if raw is not None:
                out[_KNOB_BY_NAME[name].field] = _parse_knob(name, raw)
        return out


def _parse_knob(name: str, value: Any) -> Any:
    text = str(value)
    try:
        return _KNOB_BY_NAME[name].parse(text)
    except argparse.ArgumentTypeError as exc:
        raise ValueError(str(exc)) from None


class Profile(Knobs):
    """A named path: knobs for both directions, ``up`` (client -> server) / ``down`` override one direction."""

    name: str = Field(min_length=1)
    up: Knobs = Field(default_factory=Knobs)
    down: Knobs = Field(default_factory=Knobs)

    def impairment(self, direction: Literal["up", "down"], mtu: int | None = None) -> Impairment:
        values = self.values()
        values.update((self.up if direction == "up" else self.down).values())
        if mtu is not None:
            values["mtu"] = mtu
        return Impairment(**values)


def _check_impairments(profile: Profile) -> Profile:
    directions: tuple[Literal["up", "down"], ...] = ("up", "down")
    for direction in directions:
        try:
            profile.impairment(direction)
        except ValueError as exc:
            raise ValueError(f"{direction}: {exc}") from None
    return profile


class Packet(StrictModel):
    #: UDP payload of the largest packet either transport sends; QUIC's max_datagram_size and SCTP's pmtu - 28
    udp_payload: int = Field(default=1200, ge=1200, le=65507)
    #: drop (and count) anything larger at the proxy, proving both sides keep to it (not with ``pmtud``)
    enforce: bool = True
    #: path MTU discovery on both transports, from ``udp_payload`` up; off by default, so that A/B runs compare
    #: the transports at one fixed size
    pmtud: bool = False


class Bulk(StrictModel):
    """One stream, up to ``bytes`` sent in ``chunk``-sized writes (one SCTP message each); goodput."""

    bytes: int = Field(default=4 * 1024 * 1024, gt=0)
    chunk: int = Field(default=16384, gt=0, le=65536)
    #: send for at most this long, so a slow path does not stretch the run; what was delivered by then counts
    max_seconds: float = Field(default=3.0, gt=0)
    timeout_s: float = Field(default=60.0, gt=0)


class RequestResponse(StrictModel):
    """One stream, one request at a time of ``size`` bytes echoed back; latency percentiles."""

    requests: int = Field(default=300, gt=0)
    size: int = Field(default=64, ge=16, le=16384)
    #: stop issuing requests after this long (so a long RTT does not make a run take minutes)
    max_seconds: float = Field(default=1.5, gt=0)
    timeout_s: float = Field(default=30.0, gt=0)


class Parallel(StrictModel):
    """``streams`` flows of echoed records, each on its own stream, then all of them on one shared stream.

    Each flow sends a record every ``interval_ms`` (staggered), whatever comes back: the same offered load over
    both transports, and enough packets in flight that a loss holds back later records.
    """

    streams: int = Field(default=8, ge=2, le=15)
    interval_ms: float = Field(default=5.0, gt=0)
    size: int = Field(default=64, ge=16, le=16384)
    #: how long each of the two phases sends
    max_seconds: float = Field(default=1.0, gt=0)
    timeout_s: float = Field(default=30.0, gt=0)


class Handshake(StrictModel):
    """``connections`` connect-and-close cycles, ``concurrency`` at a time; connections per second."""

    connections: int = Field(default=400, gt=0)
    concurrency: int = Field(default=8, gt=0, le=256)
    connect_timeout_s: float = Field(default=5.0, gt=0)
    timeout_s: float = Field(default=60.0, gt=0)


class Datagrams(StrictModel):
    """``count`` unreliable messages ``interval_ms`` apart, echoed; share delivered and latency."""

    count: int = Field(default=400, gt=0)
    size: int = Field(default=200, ge=16, le=1100)
    interval_ms: float = Field(default=1.0, ge=0)
    #: how long to wait for echoes after the last send before counting the rest as lost
    drain_s: float = Field(default=0.5, ge=0)
    timeout_s: float = Field(default=30.0, gt=0)


class Interleave(StrictModel):
    """Head-of-line blocking between streams on the sending side: one large message against small records.

    ``streams`` flows of ``size``-byte echoed records, each on its own stream, one record every ``interval_ms``
    per flow (staggered), as in ``parallel``, throughout. For ``idle_seconds`` nothing else is sent: their round
    trips then are the baseline. Then ``message`` bytes go out on a stream of their own three times, each time
    until the receiver reports the last byte: as ``piece``-byte messages unmeasured (the warm-up, so that both
    measured phases start from a grown congestion window; without it the second one started with the window the
    first had built, and filled a bottleneck's queue faster), again as ``piece``-byte messages (the control: the
    same load on the same connection and path, which any scheduler interleaves), then, ``settle_seconds`` later,
    as ONE
    ``stream.send`` (one SCTP message). Busy minus idle is what the message costs the records in all; busy minus
    the control is what they lose because it is one message: head-of-line blocking in the send queue.

    Over SCTP the whole message sits in the receiver's ``recbuf`` until its last fragment arrives (there is no
    partial delivery) and in the sender's ``sndbuf`` until acknowledged, so both must hold it: the matrix asks
    for at least ``RECBUF_FACTOR`` times the message.
    """

    streams: int = Field(default=4, ge=1, le=13)
    size: int = Field(default=64, ge=16, le=1024)
    interval_ms: float = Field(default=2.0, gt=0)
    idle_seconds: float = Field(default=0.5, gt=0)
    message: int = Field(default=1 << 20, gt=0)
    #: the control's message size: small enough for one packet on either transport (udp_payload >= 1200)
    piece: int = Field(default=1024, ge=16, le=1100)
    #: between the control and the large message, for what the control left in flight to drain
    settle_seconds: float = Field(default=0.2, ge=0)
    timeout_s: float = Field(default=30.0, gt=0)


#: SCTP's recbuf and sndbuf against the interleave message: a message's fragments are held at their true cost
#: (payload plus bookkeeping, about 1.4x for full-size fragments), and the small records need room beside it
RECBUF_FACTOR = 2

WorkloadName = Literal["bulk", "rr", "parallel", "handshake", "datagrams", "interleave"]
WORKLOAD_NAMES: tuple[WorkloadName, ...] = ("bulk", "rr", "parallel", "handshake", "datagrams", "interleave")


class Workloads(StrictModel):
    """A workload left out is not run."""

    bulk: Bulk | None = None
    rr: RequestResponse | None = None
    parallel: Parallel | None = None
    handshake: Handshake | None = None
    datagrams: Datagrams | None = None
    interleave: Interleave | None = None

    def enabled(self) -> list[tuple[WorkloadName, StrictModel]]:
        return [(name, params) for name in WORKLOAD_NAMES if (params := getattr(self, name)) is not None]


def _all_workloads() -> Workloads:
    return Workloads(
        bulk=Bulk(),
        rr=RequestResponse(),
        parallel=Parallel(),
        handshake=Handshake(),
        datagrams=Datagrams(),
        interleave=Interleave(),
    )


def _default_profiles() -> list[Profile]:
    return [
        Profile(name="clean"),
        Profile(name="loss1", loss="1%"),
        Profile(name="loss5", loss="5%"),
        Profile(name="rtt20", delay="10ms"),
        Profile(name="rtt20-loss1", delay="10ms", loss="1%"),
    ]


def _quick_workloads() -> dict[WorkloadName, dict[str, Any]]:
    return {
        "bulk": {"bytes": 1 << 20, "max_seconds": 0.5, "timeout_s": 10},
        "rr": {"requests": 50, "max_seconds": 0.5, "timeout_s": 10},
        "parallel": {"streams": 4, "max_seconds": 0.3, "timeout_s": 10},
        "handshake": {"connections": 8, "concurrency": 4, "timeout_s": 10},
        "datagrams": {"count": 100, "drain_s": 0.3, "timeout_s": 10},
        "interleave": {"idle_seconds": 0.2, "message": 262144, "timeout_s": 10},
    }


class Quick(StrictModel):
    """What ``--quick`` changes: fewer repetitions and profiles, smaller workloads (merged over their params)."""

    repetitions: int = Field(default=1, gt=0)
    #: profile names kept; None keeps all
    profiles: list[str] | None = None
    workloads: dict[WorkloadName, dict[str, Any]] = Field(default_factory=_quick_workloads)


class BenchConfig(StrictModel):
    #: A and B, run alternately in this order
    transports: list[str] = Field(default_factory=lambda: ["quic", "sctp"], min_length=1)
    #: per transport, options for both its listener and its client (e.g. sctp: {rtoinfo: {min: 50}})
    transport_options: dict[str, dict[str, Any]] = Field(default_factory=dict)
    packet: Packet = Field(default_factory=Packet)
    profiles: list[Profile] = Field(default_factory=_default_profiles, min_length=1)
    workloads: Workloads = Field(default_factory=_all_workloads)
    repetitions: int = Field(default=3, gt=0)
    seed: int = 1
    host: str = "127.0.0.1"
    #: subprocess: server and proxy in a worker process with its own event loop (realistic numbers);
    #: inprocess: everything on one event loop (no second process; client and server share a core)
    server: Literal["subprocess", "inprocess"] = "subprocess"
    quick: Quick = Field(default_factory=Quick)

    @field_validator("profiles")
    @classmethod
    def _profiles(cls, profiles: list[Profile]) -> list[Profile]:
        names = [p.name for p in profiles]
        for i, name in enumerate(names):
            if names.index(name) != i:
                raise ValueError(f"duplicate profile name {name!r}")
        for profile in profiles:
            try:
                _check_impairments(profile)
            except ValueError as exc:
                raise ValueError(f"profile {profile.name!r}: {exc}") from None
        return profiles

    @model_validator(mode="after")
    def _consistent(self) -> BenchConfig:
        if len(set(self.transports)) != len(self.transports):
            raise ValueError("transports: each transport once")
        for transport, options in self.transport_options.items():
            if transport not in self.transports:
                raise ValueError(f"transport_options.{transport}: not one of transports {self.transports}")
            reserved = sorted(RESERVED_OPTIONS & set(options))
            if reserved:
                raise ValueError(
                    f"transport_options.{transport}: {', '.join(reserved)} are set by the bench "
                    "(the packet size comes from packet.udp_payload)"
                )
        if self.quick.profiles is not None:
            unknown = sorted(set(self.quick.profiles) - {p.name for p in self.profiles})
            if unknown:
                raise ValueError(f"quick.profiles: no such profile: {', '.join(unknown)}")
        if self.workloads.interleave is not None and "sctp" in self.transports:
            _check_sctp_buffers(self.workloads.interleave.message, self.transport_options.get("sctp", {}))
        return self

    def profile(self, name: str) -> Profile:
        for profile in self.profiles:
            if profile.name == name:
                return profile
        raise KeyError(name)


def _check_sctp_buffers(message: int, options: dict[str, Any]) -> None:
    """The interleave workload's one large message must fit SCTP's buffers, or the run aborts (Out of Resource)
    or fails to queue: say so now, naming the option, rather than as an error after minutes of other runs."""
    need = RECBUF_FACTOR * message
    for name in ("recbuf", "sndbuf"):
        value = options.get(name, SCTP_BUFFER_DEFAULT)
        if isinstance(value, int) and value < need:
            raise ValueError(
                f"transport_options.sctp.{name}: {value} cannot hold the interleave workload's {message}-byte "
                f"message; set it to at least {need} ({RECBUF_FACTOR} x the message)"
            )


def default_config() -> BenchConfig:
    """The matrix when no file is given (conf/ab.yaml spells out the same)."""
    return BenchConfig(
        transport_options={"sctp": {"nodelay": True, "recbuf": 2 * 1024 * 1024, "sndbuf": 2 * 1024 * 1024}},
        quick=Quick(profiles=["clean", "loss5", "rtt20"]),
    )


def narrow(
    config: BenchConfig,
    *,
    transports: list[str] | None = None,
    profiles: list[str] | None = None,
    workloads: list[str] | None = None,
    repetitions: int | None = None,
    seed: int | None = None,
) -> BenchConfig:
    """The matrix with only the named transports/profiles/workloads (command-line choices), checked again."""
    data = config.model_dump(mode="python")
    if transports:
        unknown = sorted(set(transports) - set(config.transports))
        if unknown:
            raise BenchConfigError(f"--transport: not in the matrix: {', '.join(unknown)}")
        data["transports"] = [t for t in config.transports if t in transports]
        data["transport_options"] = {k: v for k, v in data["transport_options"].items() if k in transports}
    if profiles:
        unknown = sorted(set(profiles) - {p.name for p in config.profiles})
        if unknown:
            raise BenchConfigError(f"--profile: not in the matrix: {', '.join(unknown)}")
        data["profiles"] = [p for p in data["profiles"] if p["name"] in profiles]
        if data["quick"]["profiles"] is not None:
            data["quick"]["profiles"] = [p for p in data["quick"]["profiles"] if p in profiles] or None
    if workloads:
        unknown = sorted(set(workloads) - set(WORKLOAD_NAMES))
        if unknown:
            raise BenchConfigError(f"--workload: no such workload: {', '.join(unknown)}")
        data["workloads"] = {k: v for k, v in data["workloads"].items() if k in workloads}
    if repetitions is not None:
        data["repetitions"] = repetitions
        data["quick"]["repetitions"] = repetitions
    if seed is not None:
        data["seed"] = seed
    return validate(data, "<command line>")


def packet_options(transport: str, udp_payload: int, pmtud: bool = False) -> dict[str, Any]:
    """The transport options that hold its packets at ``udp_payload`` bytes of UDP payload (IPv4), or with
    ``pmtud`` start them there and let path MTU discovery raise them."""
    ceiling = {} if pmtud else {"maximum_mtu": udp_payload + IPV4_UDP_OVERHEAD}
    if transport == "quic":
        return {"max_datagram_size": udp_payload, **ceiling}
    if transport == "sctp":
        return {"pmtu": udp_payload + IPV4_UDP_OVERHEAD, **ceiling}
    return {}


def listener_options(config: BenchConfig, transport: str) -> dict[str, Any]:
    """One listener on an ephemeral port of ``config.host``."""
    options: dict[str, Any] = {"transport": transport, "host": config.host, "port": 0, "name": "bench"}
    if transport == "quic":
        options["alpn"] = [QUIC_ALPN]
    options.update(packet_options(transport, config.packet.udp_payload, config.packet.pmtud))
    options.update(config.transport_options.get(transport, {}))
    return options


def client_options(config: BenchConfig, transport: str) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if transport == "quic":
        options.update(alpn=[QUIC_ALPN], verify="none")
    options.update(packet_options(transport, config.packet.udp_payload, config.packet.pmtud))
    options.update(config.transport_options.get(transport, {}))
    return options


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def quick_version(config: BenchConfig) -> BenchConfig:
    """The ``--quick`` matrix: the config's ``quick`` section applied."""
    data = config.model_dump(mode="python")
    quick = config.quick
    data["repetitions"] = quick.repetitions
    if quick.profiles is not None:
        keep = set(quick.profiles)
        data["profiles"] = [p for p in data["profiles"] if p["name"] in keep]
    for name, params in quick.workloads.items():
        if data["workloads"].get(name) is not None:
            data["workloads"][name] = _merge(data["workloads"][name], params)
    return validate(data, "<quick>")


def _location(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        parts.append(f"[{item}]" if isinstance(item, int) else ("." if parts else "") + str(item))
    return "".join(parts) or "(top level)"


def validate(data: Any, source: str) -> BenchConfig:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise BenchConfigError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        return BenchConfig.model_validate(data)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            message = "unknown key" if error["type"] == "extra_forbidden" else str(error["msg"])
            message = message.removeprefix("Value error, ")
            loc = tuple(error["loc"])
            # a check of the whole file names its keys in the message itself
            lines.append(f"{source}: {_location(loc)}: {message}" if loc else f"{source}: {message}")
        raise BenchConfigError("\n".join(lines)) from None


def load(path: str | Path) -> BenchConfig:
    source = str(path)
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise BenchConfigError(f"{source}: cannot read: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise BenchConfigError(f"{source}: not valid YAML: {exc}") from None
    return validate(data, source)


@dataclass(frozen=True, slots=True)
class RunSpec:
    """One cell of the matrix at one repetition."""

    index: int
    profile: str
    workload: WorkloadName
    rep: int
    transport: str
    #: the proxy's seed: the same for A and B of one repetition, so both meet the same loss pattern draws
    seed: int


def plan(config: BenchConfig) -> list[RunSpec]:
    """Every run in order: per profile and workload, repetitions of A B (A B A B ...), so drift hits both alike."""
    runs: list[RunSpec] = []
    for p_index, profile in enumerate(config.profiles):
        for w_index, (workload, _) in enumerate(config.workloads.enabled()):
            for rep in range(config.repetitions):
                seed = (config.seed * 1_000_003 + p_index * 10_007 + w_index * 101 + rep) & 0x7FFFFFFF
                for transport in config.transports:
                    runs.append(RunSpec(len(runs), profile.name, workload, rep, transport, seed))
    return runs
