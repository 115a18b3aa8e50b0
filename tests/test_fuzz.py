"""Fuzz both listeners of a real ``mux serve`` through real sockets (issue 9).

A seeded mutator takes packets captured from a live exchange with the server (SCTP: INIT, COOKIE-ECHO,
DATA, fragments, SACK, HEARTBEAT, ERROR, unknown chunks, SHUTDOWN, ABORT...; QUIC: a real client's
Initial, Handshake and 1-RTT packets) and breaks them: bit flips, truncation, chunks duplicated,
reordered, dropped or invented, length fields that lie, fields set to edge values, packets spliced.
SCTP packets get a correct CRC32c again after mutating (most of the time), or they would all die at the
checksum; they carry the live association's ports and tag so they reach the association, not only the
endpoint. Thousands go out, from the live peers' addresses and from others. Then: no traceback and no
error-level line in the server's log, the log did not balloon, the server is alive, and a fresh client
echoes over each transport.

The seed is in every failure message; rerun one with ``MUX_FUZZ_SEED=N``. ``MUX_FUZZ_SCTP`` and
``MUX_FUZZ_QUIC`` set the packet counts, ``MUX_FUZZ_MUX_PATH`` runs the server from another checkout.
"""

from __future__ import annotations

import os
import random
import re
import socket
import struct
import time
from pathlib import Path

from mux.sctp.chunks import ForwardTsnChunk, InitAckChunk, ShutdownAckChunk, ShutdownCompleteChunk, UnknownChunk
from mux.sctp.packet import packet_crc
from tests.raw_peers import QuicClient, RawSctpPeer, ServerProcess, garbage_initial, udp_socket

SEED = int(os.environ.get("MUX_FUZZ_SEED", "90909"))
SCTP_PACKETS = int(os.environ.get("MUX_FUZZ_SCTP", "8000"))
QUIC_PACKETS = int(os.environ.get("MUX_FUZZ_QUIC", "6000"))
MUX_PATH = os.environ.get("MUX_FUZZ_MUX_PATH") or None
#: log bytes the whole run may add: a few lines per connection, never a line per hostile packet
LOG_BUDGET_PER_PACKET = 50

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT")
I16 = (0, 1, 2, 3, 4, 5, 0x7FFF, 0x8000, 0xFFFE, 0xFFFF)
I32 = (0, 1, 2, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0xFFFFFFFF)
#: where a chunk's TLVs start, for the chunk types that carry them (INIT, INIT-ACK, HEARTBEAT(-ACK), ABORT, ERROR)
TLV_START = {1: 20, 2: 20, 4: 4, 5: 4, 6: 4, 9: 4, 130: 4}


# -- SCTP mutation ------------------------------------------------------------------------------------------------


def chunk_spans(body: bytes) -> list[bytearray]:
    """The chunks of a packet body as raw padded pieces, by their length fields; a malformed tail stays one piece."""
    out: list[bytearray] = []
    off = 0
    while off + 4 <= len(body):
        length = int.from_bytes(body[off + 2 : off + 4], "big")
        if length < 4 or off + length > len(body):
            break
        stop = min(off + ((length + 3) & ~3), len(body))
        out.append(bytearray(body[off:stop]))
        off = stop
    if off < len(body):
        out.append(bytearray(body[off:]))
    return out


def random_chunk(rng: random.Random) -> bytearray:
    ctype = rng.choice([*range(15), 64, 127, 128, 130, 191, 192, 193, 255, rng.randrange(256)])
    body = rng.randbytes(rng.choice([0, 1, 3, 4, 8, 12, 16, 20, rng.randrange(64), rng.randrange(600)]))
    length = 4 + len(body)
    if rng.random() < 0.3:
        length = rng.choice([0, 1, 2, 3, 4, length - 1, length + 1, length + 4, rng.randrange(1 << 16)])
    raw = bytearray([ctype, rng.randrange(256)]) + (length & 0xFFFF).to_bytes(2, "big") + body
    return raw + bytes(-len(raw) % 4)


def mutate_chunks(chunks: list[bytearray], corpus: list[bytes], rng: random.Random) -> list[bytearray]:
    for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 5))):
        op = rng.randrange(11)
        chunks = [c for c in chunks if c]
        if not chunks:
            chunks.append(random_chunk(rng))
            continue
        i = rng.randrange(len(chunks))
        c = chunks[i]
        if op == 0:  # bit flips
            for _ in range(rng.randint(1, 4)):
                bit = rng.randrange(len(c) * 8)
                c[bit // 8] ^= 1 << (bit % 8)
        elif op == 1:  # truncate the packet anywhere
            whole = b"".join(chunks)
            chunks = [bytearray(whole[: rng.randrange(len(whole) + 1)])]
        elif op == 2:  # duplicate a chunk
            chunks.insert(rng.randrange(len(chunks) + 1), bytearray(c))
        elif op == 3:  # reorder
            rng.shuffle(chunks)
        elif op == 4:  # drop one
            del chunks[i]
        elif op == 5:  # invent one
            chunks.insert(rng.randrange(len(chunks) + 1), random_chunk(rng))
        elif op == 6 and len(c) >= 4:  # the length field lies
            c[2:4] = rng.choice([*I16, len(c) - 1, len(c) + 1, len(c) + 4, rng.randrange(1 << 16)]).to_bytes(2, "big")
        elif op == 7:  # splice chunks of another captured packet
            other = chunk_spans(rng.choice(corpus)[12:])
            if other:
                chunks.insert(rng.randrange(len(chunks) + 1), rng.choice(other))
        elif op == 8 and len(c) >= 8:  # an aligned field (TSN, stream, SSN, gap count, a_rwnd...) to an edge value
            off = rng.randrange(4, len(c) - 1) & ~1
            if off + 4 <= len(c) and rng.random() < 0.5:
                c[off : off + 4] = rng.choice(I32).to_bytes(4, "big")
            else:
                c[off : off + 2] = rng.choice(I16).to_bytes(2, "big")
        elif op == 9 and c[0] in TLV_START and len(c) >= TLV_START[c[0]] + 4:  # a parameter's length lies
            off = TLV_START[c[0]]
            c[off + 2 : off + 4] = rng.choice([*I16, rng.randrange(1 << 16)]).to_bytes(2, "big")
        elif op == 10 and len(c) >= 4:  # flags
            c[1] = rng.randrange(256)
    return chunks


def mutate_sctp(seed_pkt: bytes, corpus: list[bytes], rng: random.Random, live: RawSctpPeer) -> bytes:
    body = b"" if rng.random() < 0.01 else seed_pkt[12:]
    if rng.random() < 0.95:
        body = b"".join(mutate_chunks(chunk_spans(body), corpus, rng))
    body = body[:1400]
    src = live.local_port if rng.random() < 0.9 else rng.randrange(1 << 16)
    dst = live.sctp_port if rng.random() < 0.97 else rng.randrange(1 << 16)
    vtag = rng.choices(
        [live.peer_tag, int.from_bytes(seed_pkt[4:8], "big"), 0, rng.randrange(1 << 32)], [0.65, 0.15, 0.1, 0.1]
    )[0]
    pkt = bytearray(struct.pack("!HHI", src, dst, vtag) + b"\x00" * 4 + body)
    if rng.random() < 0.95:  # most reach the parser and the association; a few test the checksum itself
        pkt[8:12] = struct.pack("<I", packet_crc(pkt))
    else:
        pkt[8:12] = rng.randbytes(4)
    return bytes(pkt)


def capture_sctp(addr: tuple[str, int], corpus: list[bytes]) -> None:
    """A real exchange with the server, every packet we send recorded: the seeds of the SCTP mutator."""
    live = RawSctpPeer(addr, local_port=4001, record=corpus)
    live.handshake()
    assert live.echo(b"hello") == b"hello", "the echo does not work before fuzzing"
    ssn = live.ssn.get(0, 0)
    parts = [
        live.data(b"a" * 600, ssn=ssn, ending=False),
        live.data(b"b" * 600, ssn=ssn, beginning=False, ending=False),
        live.data(b"c" * 600, ssn=ssn, beginning=False),
    ]
    live.ssn[0] = (ssn + 1) & 0xFFFF
    live.send(parts[:2])
    live.send(parts[2:])
    live.send([live.data(b"unordered", unordered=True, stream_id=3), live.data(b"immediate", immediate=True)])
    live.recv_until(lambda r: False, 0.3, ack=True)
    live.send([live.sack(gaps=[(2, 3), (5, 9)], dups=[1, 2])])
    live.send([live.heartbeat(b"h" * 16)])
    live.send([live.error_chunk(40, cause_size=8)])
    live.send([UnknownChunk(t, 0, b"unknown") for t in (0xBF, 0xFF, 0x3F)])
    live.send([UnknownChunk(0x7F, 0, b"stop and report")])
    live.send([ForwardTsnChunk(live.next_tsn - 1, [(0, 1)])])
    live.send([live.data(b"x"), live.data(b"y", stream_id=40)])  # a stream beyond the negotiated ones
    live.recv_until(lambda r: False, 0.3, ack=True)
    closer = RawSctpPeer(addr, local_port=4002, record=corpus)
    closer.handshake()
    closer.send([closer.data(b"bye"), closer.shutdown_chunk()])
    closer.recv_until(lambda r: r.has(ShutdownAckChunk), 1.0, ack=True)
    closer.send([ShutdownCompleteChunk()])
    aborter = RawSctpPeer(addr, local_port=4003, record=corpus)
    aborter.handshake()
    aborter.send([aborter.abort_chunk(b"fuzz")])
    aborter.send([ShutdownAckChunk()])
    aborter.send([InitAckChunk(1, 65536, 4, 4, 1, [])], vtag=0)
    aborter.send([aborter.init_chunk(aborter.unrecognized_params(8, size=4))], vtag=0)
    for p in (live, closer, aborter):
        p.close()


# -- QUIC mutation ------------------------------------------------------------------------------------------------


def mutate_quic(seed_pkt: bytes, corpus: list[bytes], rng: random.Random, live_dcid: bytes) -> bytes:
    b = bytearray(seed_pkt)
    op = rng.randrange(10)
    if op <= 1:  # bit flips, half of them in the header
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(min(len(b), 64)) if rng.random() < 0.5 else rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
    elif op == 2:
        del b[rng.randrange(1, len(b) + 1) :]
    elif op == 3:
        b += rng.randbytes(rng.randrange(1, 300))
    elif op == 4:  # coalesced with another packet
        b += rng.choice(corpus)
    elif op == 5 and b[0] & 0x80 and len(b) > 7:  # long header fields
        field = rng.randrange(4)
        if field == 0:
            version = rng.choice([0, 1, 2, 0x6B3343CF, 0xFF00001D, 0x0A0A0A0A, rng.randrange(1 << 32)])
            b[1:5] = version.to_bytes(4, "big")
        elif field == 1:
            b[5] = rng.choice([0, 1, 8, 20, 21, 255, rng.randrange(256)])
        else:
            i = min(len(b) - 1, 6 + b[5] + (0 if field == 2 else 1 + rng.randrange(12)))
            b[i] = rng.randrange(256)
    elif op == 6:  # a short header aimed at the live connection, the rest garbage or shifted
        b = bytearray([0x40 | rng.randrange(64)]) + live_dcid + (b[9:] if rng.random() < 0.5 else rng.randbytes(60))
    elif op == 7:
        b = bytearray(garbage_initial(rng))
    elif op == 8:
        b = bytearray([rng.randrange(256)]) + rng.randbytes(rng.randrange(0, 1400))
    # op 9 (and a no-op 5): replay as captured
    return bytes(b)


# -- the run ------------------------------------------------------------------------------------------------------


def _send(sock: socket.socket, data: bytes, addr: tuple[str, int]) -> None:
    try:
        sock.sendto(data, addr)
    except (BlockingIOError, OSError):
        pass  # a full buffer is loss; an ICMP error from an earlier send is not ours to care about


def _drain(socks: list[socket.socket]) -> None:
    for s in socks:
        while True:
            try:
                s.recvfrom(65536)
            except (BlockingIOError, OSError):
                break


def tracebacks_in(log: str) -> list[str]:
    """Each traceback with the log line that introduced it, up to the next timestamped line."""
    lines = log.splitlines()
    out: list[str] = []
    for i, line in enumerate(lines):
        if line.startswith("Traceback"):
            j = i + 1
            while j < len(lines) and not TIMESTAMP.match(lines[j]):
                j += 1
            out.append("\n".join(lines[max(i - 1, 0) : j]))
    return out


def test_fuzz_both_listeners(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    srv = ServerProcess(tmp_path, quic={}, sctp={}, mux_path=MUX_PATH).start()
    problems: list[str] = []
    counts = {"sctp": 0, "quic": 0, "renewed": 0}
    t0 = time.monotonic()
    try:
        sctp_corpus: list[bytes] = []
        capture_sctp(srv.sctp_addr, sctp_corpus)
        quic_corpus: list[bytes] = []
        live_quic = QuicClient(srv.quic_addr, datagrams=True)
        live_quic.record = quic_corpus
        live_quic.connect(5.0)
        for i in range(3):
            assert live_quic.echo(b"q" * (10 + 500 * i)) is not None, "the QUIC echo does not work before fuzzing"
        live_quic.quic.send_datagram_frame(b"dgram")
        live_quic.pump(0.2)
        live_quic.record = None
        live_dcid = live_quic.quic._peer_cid.cid
        log0 = srv.log_size()

        others = [udp_socket(rcvbuf=256 * 1024) for _ in range(6)]
        live = RawSctpPeer(srv.sctp_addr, local_port=rng.randrange(1024, 1 << 16))
        live.handshake()
        for n in range(SCTP_PACKETS):
            if n and n % 400 == 0:  # mutated ABORTs and SHUTDOWNs end associations: keep one to aim at
                live.close()
                live = RawSctpPeer(srv.sctp_addr, local_port=rng.randrange(1024, 1 << 16))
                try:
                    live.handshake(timeout=2.0)
                    counts["renewed"] += 1
                except TimeoutError:
                    problems.append(f"after {n} SCTP packets a new association could not be set up")
            pkt = mutate_sctp(rng.choice(sctp_corpus), sctp_corpus, rng, live)
            _send(live.sock if rng.random() < 0.8 else rng.choice(others), pkt, srv.sctp_addr)
            counts["sctp"] += 1
            if n % 20 == 19:
                time.sleep(0.002)  # let the server keep up: a packet the kernel drops tests nothing
                _drain([live.sock, *others])
        live.close()
        for n in range(QUIC_PACKETS):
            pkt = mutate_quic(rng.choice(quic_corpus), quic_corpus, rng, live_dcid)
            _send(live_quic.sock if rng.random() < 0.7 else rng.choice(others), pkt, srv.quic_addr)
            counts["quic"] += 1
            if n % 20 == 19:
                live_quic.pump(0.002)  # the live connection keeps answering ACKs and timers
                _drain(others)
        live_quic.pump(0.05)
        if live_quic.terminated is not None:
            problems.append(f"unauthenticated packets closed the live QUIC connection: {live_quic.terminated}")
        elif live_quic.echo(b"live after the fuzz", timeout=3.0) != b"live after the fuzz":
            problems.append("the live QUIC connection no longer echoes after the fuzz")
        live_quic.close()
        for s in others:
            s.close()
        srv.settle(timeout=10.0)

        if not srv.alive():
            problems.append(f"the server exited with code {srv.proc.returncode if srv.proc else '?'}")
        else:
            fresh = RawSctpPeer(srv.sctp_addr, local_port=rng.randrange(1024, 1 << 16))
            try:
                fresh.handshake(timeout=5.0)
                if fresh.echo(b"after the fuzz", timeout=5.0) != b"after the fuzz":
                    problems.append("a fresh SCTP association does not echo")
            except TimeoutError as exc:
                problems.append(f"a fresh SCTP association cannot be set up: {exc}")
            fresh.close()
            client = QuicClient(srv.quic_addr)
            try:
                client.connect(5.0)
                if client.echo(b"after the fuzz", timeout=5.0) != b"after the fuzz":
                    problems.append("a fresh QUIC connection does not echo")
            except (TimeoutError, ConnectionError) as exc:
                problems.append(f"a fresh QUIC client cannot connect: {exc}")
            client.close()
    finally:
        srv.stop()
    tracebacks = tracebacks_in(srv.log_text())
    if tracebacks:
        shown = "\n".join(tracebacks[:3])
        problems.append(f"{len(tracebacks)} traceback(s) in the log, the first ones:\n{shown}")
    errors = srv.error_lines()
    if errors:
        shown = "\n".join(errors[:15])
        problems.append(f"{len(errors)} error-level log line(s), the first ones:\n{shown}")
    grown = srv.log_size() - log0
    budget = LOG_BUDGET_PER_PACKET * (counts["sctp"] + counts["quic"])
    if grown > budget:
        problems.append(f"the log grew by {grown} bytes during the fuzz (budget {budget}): peer input is logged")
    elapsed = time.monotonic() - t0
    assert not problems, (
        f"fuzz seed={SEED} (rerun with MUX_FUZZ_SEED={SEED}); sent {counts} in {elapsed:.1f} s; "
        f"server log {srv.log_path}\n- " + "\n- ".join(problems)
    )
