"""Hostile SCTP peers against a real ``mux serve`` process, through real UDP sockets on loopback.

Each test is a finding of the hostile-input campaign (issue 9) and fails on the code before it: what the server
acknowledges is held to its window, its memory stays bounded, chunks bundled with DATA are handled as RFC 9260
says without a traceback, and a flood of ERROR chunks does not flood the log.
"""

from __future__ import annotations

import ast
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mux.sctp.chunks import AbortChunk, SackChunk, ShutdownAckChunk, ShutdownCompleteChunk
from mux.sctp.params import OUT_OF_RESOURCE
from mux.sctp.rx.reassembly import CHUNK_COST, MESSAGE_COST
from tests.raw_peers import RawSctpPeer, RssSampler, ServerProcess

MiB = 1 << 20


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    # MUX_SERVER_PATH runs the server from another checkout (e.g. the code before these fixes, to see them fail)
    with ServerProcess(tmp_path, sctp={}, log_level="debug", mux_path=os.environ.get("MUX_SERVER_PATH")) as proc:
        yield proc


def _peer(server: ServerProcess) -> RawSctpPeer:
    peer = RawSctpPeer(server.sctp_addr)
    peer.handshake()
    return peer


def _clean_log(server: ServerProcess) -> None:
    assert not server.has_traceback(), server.log_text()[-3000:]
    assert not server.error_lines(), server.error_lines()
    assert server.alive()


def _fresh_echo_works(server: ServerProcess) -> None:
    peer = _peer(server)
    try:
        assert peer.echo(b"still there?") == b"still there?"
    finally:
        peer.close()


def test_a_peer_that_never_reads_is_held_to_the_window(server: ServerProcess) -> None:
    """The echo's replies are never acknowledged, so the echo blocks; then no window must be left for the peer."""
    peer = _peer(server)
    with RssSampler(server.pid) as rss:
        acked = peer.send_bulk(24 * MiB, ack_server=False, stall_limit=1.5, time_limit=30)
    # recbuf (1 MiB, charged per message) plus what the echo may queue (sndbuf, 1 MiB) before it waits
    assert acked <= 3 * MiB, f"the server acknowledged {acked / MiB:.1f} MiB it could not pass on"
    assert peer.server_arwnd < 64 * 1024
    assert rss.growth < 48 * MiB, f"RSS grew {rss.growth / MiB:.0f} MiB"
    _fresh_echo_works(server)
    _clean_log(server)
    peer.close()


def test_one_byte_fragments_that_never_end_are_charged_and_refused(server: ServerProcess) -> None:
    peer = _peer(server)
    frags = peer.fragments(60_000)  # one message, never ended: before, ~15 MB held for a 1 MiB recbuf
    with RssSampler(server.pid) as rss:
        taken = peer.send_paced(peer.pack(frags), window=16, stall_limit=1.5)
    peer.recv(0.5)
    aborts = [c for r in peer.received for c in r.chunks(AbortChunk)]
    sent = sum(len(p) for p in peer.pack(frags)[:taken])
    assert sent * CHUNK_COST <= 2 * MiB + 64 * CHUNK_COST * 2, f"{sent} one-byte fragments taken"
    assert aborts, "the association should end: what it holds can never complete"
    abort = aborts[0]  # the packets still in flight then draw out-of-the-blue ABORTs
    assert [c.code for c in abort.causes] == [OUT_OF_RESOURCE]
    assert rss.growth < 24 * MiB, f"RSS grew {rss.growth / MiB:.0f} MiB"
    _fresh_echo_works(server)
    _clean_log(server)
    peer.close()


def test_tiny_messages_above_a_hole_are_held_within_the_window(server: ServerProcess) -> None:
    peer = _peer(server)
    peer.data(b"the hole")  # takes a TSN and SSN 0, never sent: every ordered message after it must wait
    msgs = [peer.data(b"m") for _ in range(30_000)]
    taken = peer.send_paced(peer.pack(msgs), window=16, stall_limit=1.5)
    held = sum(len(p) for p in peer.pack(msgs)[:taken])
    # recbuf 1 MiB charged at a message's cost each: a few thousand, not the 16k+ the old limits allowed
    assert held * (1 + MESSAGE_COST) <= 1 * MiB + 128 * MESSAGE_COST, f"{held} one-byte messages held above the hole"
    assert peer.server_arwnd < 4096
    _fresh_echo_works(server)
    _clean_log(server)
    peer.close()


def test_data_bundled_with_abort_is_not_a_crash(server: ServerProcess) -> None:
    peer = _peer(server)
    assert peer.echo(b"warm up") == b"warm up"  # the behaviour knows the stream: its hot path runs
    peer.send([peer.data(b"one last thing"), peer.abort_chunk(b"bye")])
    server.settle()
    assert server.alive()
    assert "crashed" not in server.log_text()
    _clean_log(server)
    _fresh_echo_works(server)
    peer.close()


def test_data_bundled_with_shutdown_draws_a_shutdown_ack(server: ServerProcess) -> None:
    peer = _peer(server)
    assert peer.echo(b"warm up") == b"warm up"
    peer.send([peer.sack()])
    data = peer.data(b"and goodbye")
    peer.send([data, peer.shutdown_chunk()])
    reply = peer.recv_until(lambda r: r.has(ShutdownAckChunk) or r.has(AbortChunk), 3.0, ack=False)
    assert reply is not None and reply.has(ShutdownAckChunk) and not reply.has(AbortChunk)
    # the DATA was received (acknowledged), and nothing new was sent after the SHUTDOWN (RFC 9260 §9.2)
    sacks = [s for r in peer.received for s in r.chunks(SackChunk)]
    assert sacks and sacks[-1].cum_tsn == data.tsn
    assert b"and goodbye" not in [m for _sid, m in peer.messages]
    peer.send([ShutdownCompleteChunk()])
    server.settle()
    _clean_log(server)
    peer.close()


def test_an_error_chunk_flood_does_not_flood_the_log(server: ServerProcess) -> None:
    peer = _peer(server)
    before = server.log_size()
    sent = 0
    for i in range(3000):
        sent += peer.send([peer.error_chunk(1100)])
        if i % 100 == 0:
            peer.drain()
    server.settle()
    logged = server.log_size() - before
    # before: an info line with the repr of every cause, 6.6 log bytes per byte received
    assert logged < sent / 100, f"{logged} log bytes for {sent} bytes of ERROR chunks"
    lines = [ln for ln in server.log_text().splitlines() if "peer reported" in ln]
    assert lines and all(len(ln) < 600 for ln in lines)
    assert len(lines) < 100
    assert re.search(r"similar lines suppressed", server.log_text()) or len(lines) <= 20
    assert peer.echo(b"still fine") == b"still fine"
    counts = _listener_info(server, "sctp")
    assert counts["peer"]["peer_errors"] == 3000, counts  # counted, every one
    _clean_log(server)
    peer.close()


def _listener_info(server: ServerProcess, name: str) -> dict[str, Any]:
    """The pool's counts for one listener, as ``mux serve`` logs them on SIGUSR1."""
    pattern = re.compile(rf"pool {name}: (\{{.*\}})$", re.M)
    before = len(pattern.findall(server.log_text()))
    assert server.proc is not None
    server.proc.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        found = pattern.findall(server.log_text())
        if len(found) > before:
            info = ast.literal_eval(found[-1])
            assert isinstance(info, dict)
            return info
        time.sleep(0.05)
    raise AssertionError("no pool counts logged")
