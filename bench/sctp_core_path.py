"""Time the SCTP core in memory: the receive path and the send path, per packet, without sockets or a loop.

**Receive** (``rx-*``): an endpoint accepts one association by hand, then takes pre-built DATA packets (in order,
or with every tenth packet held back and sent later, so gaps open and close) and answers with its SACKs; the
application reads every message.

**Send** (``tx-*``): a client association queues messages (up to its ``sndbuf``) and makes packets; a server
association in the same process takes them and SACKs them back. Only the sender's work is timed: ``send``,
``datagrams_to_send`` and taking in the SACKs. One stream, or eight streams at once (the scheduler's work); over
DATA, and (``tx-idata-*``) over I-DATA where the checkout offers it, so the ratio there is I-DATA against DATA.

It prints microseconds per packet for each workload. To compare two checkouts, give each with ``--mux-path``:
they run in their own processes, alternating A B A B, and the ratio is reported from the medians of one run::

    python bench/sctp_core_path.py --mux-path /work/before --mux-path . --reps 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

RX_WORKLOADS = {
    # name: (messages per packet, message size, reorder)
    "rx-bulk-1200": (1, 1180, False),
    "rx-small-20x40": (20, 40, False),
    "rx-bulk-reordered": (1, 1180, True),
    "rx-small-reordered": (20, 40, True),
}
TX_WORKLOADS = {
    # name: (message size, streams, I-DATA offered)
    "tx-bulk-1200": (1180, 1, False),
    "tx-small-40": (40, 1, False),
    "tx-bulk-8-streams": (1180, 8, False),
    "tx-64k-messages": (65000, 1, False),
    # with I-DATA (RFC 8260) where the checkout has it (before it, the same over DATA): interleaving per chunk
    "tx-idata-8-streams": (1180, 8, True),
    "tx-idata-64k-8-str": (65000, 8, True),
}
WORKLOADS = [*RX_WORKLOADS, *TX_WORKLOADS]


def run_one(workload: str, packets: int) -> float:
    """Seconds per packet for ``workload`` in this process's ``mux``."""
    if workload in TX_WORKLOADS:
        return run_tx(workload, packets)
    from mux.sctp import events as ev
    from mux.sctp.chunks import CookieEchoChunk, DataChunk, InitAckChunk, InitChunk
    from mux.sctp.config import SctpConfig
    from mux.sctp.endpoint import Endpoint
    from mux.sctp.packet import parse_packet, serialize_packet
    from mux.sctp.params import StateCookieParam

    per_packet, size, reorder = RX_WORKLOADS[workload]
    peer = ("10.0.0.9", 6000)
    server = Endpoint(SctpConfig(recbuf=4 << 20), local_port=5000)
    now = 1000.0
    tag, tsn0 = 0x1234_5678, 0xFFFF_FF00  # wraps during the run
    server.receive_datagram(serialize_packet(6000, 5000, 0, [InitChunk(tag, 1 << 20, 16, 16, tsn0)]), peer, now)
    ((ack_raw, _),) = server.datagrams_to_send(now)
    ack = parse_packet(ack_raw).chunks[0]
    assert isinstance(ack, InitAckChunk)
    cookie = next(p.cookie for p in ack.params if isinstance(p, StateCookieParam))
    echo = serialize_packet(6000, 5000, ack.initiate_tag, [CookieEchoChunk(cookie)])
    assoc = server.receive_datagram(echo, peer, now)
    assert assoc is not None
    while server.next_event() is not None:
        pass
    consume = getattr(assoc, "consumed", None)
    payload = bytes(size)
    wire: list[bytes] = []
    tsn = tsn0
    ssn = 0
    for _ in range(packets):
        chunks = []
        for _ in range(per_packet):
            chunks.append(DataChunk(tsn & 0xFFFFFFFF, 0, ssn & 0xFFFF, 0, payload))
            tsn += 1
            ssn += 1
        wire.append(serialize_packet(6000, 5000, ack.initiate_tag, chunks))
    if reorder:  # hold every tenth packet back by five packets
        for i in range(0, len(wire) - 5, 10):
            wire.insert(i + 5, wire.pop(i))
    receive = server.receive_datagram
    received = 0
    start = time.perf_counter()
    for i, raw in enumerate(wire):
        receive(raw, peer, now)
        if i & 1:
            assoc.datagrams_to_send(now)
            event = assoc.next_event()
            while event is not None:
                if type(event) is ev.DataReceived:
                    received += 1
                    if consume is not None:
                        consume(len(event.data))
                event = assoc.next_event()
    assoc.datagrams_to_send(now)
    elapsed = time.perf_counter() - start
    while (event := assoc.next_event()) is not None:
        received += type(event) is ev.DataReceived
    assert received == packets * per_packet, (received, packets * per_packet)
    return elapsed / packets


def run_tx(workload: str, packets: int) -> float:
    """Seconds of the sender's work per DATA packet it sent."""
    from mux.sctp import events as ev
    from mux.sctp.config import SctpConfig
    from mux.sctp.endpoint import Endpoint

    size, streams, idata = TX_WORKLOADS[workload]
    options: dict[str, object] = {"recbuf": 4 << 20, "sndbuf": 4 << 20, "nodelay": True}
    options |= {"num_ostreams": 16, "max_instreams": 16}
    if "intl_enable" in SctpConfig.__dataclass_fields__:  # an older checkout has no I-DATA: its tx-idata runs DATA
        options["intl_enable"] = idata
    config = SctpConfig(**options)  # type: ignore[arg-type]
    a, b = ("10.0.0.1", 5001), ("10.0.0.2", 5002)
    client = Endpoint(config, local_port=5001)
    server = Endpoint(config, local_port=5002)
    now = 1000.0
    assoc = client.connect(b, 5002, now)
    peer = None
    for _ in range(4):  # INIT, INIT-ACK, COOKIE-ECHO, COOKIE-ACK
        for data, _addr in assoc.datagrams_to_send(now):
            server.receive_datagram(data, a, now)
        for data, _addr in server.datagrams_to_send(now):
            client.receive_datagram(data, b, now)
        while (e := server.next_event()) is not None:
            peer = e.association
        if peer is not None:
            for data, _addr in peer.datagrams_to_send(now):
                client.receive_datagram(data, b, now)
    assert peer is not None
    while assoc.next_event() is not None:
        pass
    payload = bytes(size)
    consume = getattr(peer, "consumed", None)
    sent_packets = 0
    elapsed = 0.0
    stream = 0
    clock = time.perf_counter
    while sent_packets < packets:
        t0 = clock()
        try:
            for _ in range(64):
                assoc.send(stream, payload)
                stream = (stream + 1) % streams
        except Exception:  # the send queue is full: wait for SACKs
            pass
        out = assoc.datagrams_to_send(now)
        elapsed += clock() - t0
        sent_packets += len(out)
        for data, _addr in out:
            server.receive_datagram(data, a, now)
        while (e := peer.next_event()) is not None:
            if type(e) is ev.DataReceived and consume is not None:
                consume(len(e.data))
        peer._t_sack = None  # acknowledge now, not after the delayed-SACK timer
        peer._need_sack = peer._need_sack or bool(out)
        acks = peer.datagrams_to_send(now)
        t0 = clock()
        for data, _addr in acks:
            client.receive_datagram(data, b, now)
        while assoc.next_event() is not None:
            pass
        elapsed += clock() - t0
        now += 0.0005
    return elapsed / sent_packets


def child(args: argparse.Namespace) -> None:
    print(json.dumps({w: run_one(w, args.packets) for w in args.workload}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mux-path", action="append", default=[], help="checkout to measure (repeat for A/B)")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--packets", type=int, default=20_000)
    parser.add_argument("--workload", action="append", choices=WORKLOADS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.workload = args.workload or list(WORKLOADS)
    if args.child:
        child(args)
        return
    paths = args.mux_path or ["."]
    results: dict[str, dict[str, list[float]]] = {p: {w: [] for w in args.workload} for p in paths}
    for _ in range(args.reps):
        for path in paths:  # alternating A B A B
            env = dict(os.environ, PYTHONPATH=os.path.abspath(path))
            cmd = [sys.executable, __file__, "--child", "--packets", str(args.packets)]
            for w in args.workload:
                cmd += ["--workload", w]
            out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True, cwd="/").stdout
            for w, secs in json.loads(out).items():
                results[path][w].append(secs * 1e6)
    fmt: dict[str, Any] = {}
    print(f"µs per packet, median [min..max] of {args.reps}; {args.packets} packets each")
    for w in args.workload:
        line = f"  {w:18}"
        for path in paths:
            xs = results[path][w]
            fmt[path] = statistics.median(xs)
            line += f"  {path}: {statistics.median(xs):7.2f} [{min(xs):.2f}..{max(xs):.2f}]"
        if len(paths) == 2:
            a, b = paths
            line += f"  {b}/{a}: {fmt[b] / fmt[a]:.2f}x"
        print(line)


if __name__ == "__main__":
    main()
