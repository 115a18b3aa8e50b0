"""``pcap: PATH`` on a listener: tshark reads the file back as SCTP (chunks by name) and as QUIC (decrypted)."""

from __future__ import annotations

import asyncio
import shutil
import socket
import struct
import subprocess
from pathlib import Path

import pytest

from mux import connect
from mux.pcap import PcapWriter, capture, ip_udp
from tests import apps as tb
from tests.conftest import ServerFactory, client_target, listener

tshark = shutil.which("tshark")
needs_tshark = pytest.mark.skipif(tshark is None, reason="tshark is not installed (apt-get install tshark)")


def run_tshark(*args: str) -> list[str]:
    assert tshark is not None
    run = subprocess.run([tshark, "-n", *args], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    return run.stdout.splitlines()


async def echo_once(url: str, options: dict[str, object], message: bytes) -> None:
    client = tb.Client()
    conn = await connect(client, url, options=options)
    stream = conn.open_stream()
    await stream.send(message)
    event = await client.next("data")
    assert bytes(event[2]) == message
    conn.close(0, "bye")
    await asyncio.wait_for(conn.wait_closed(), 5)


@needs_tshark
async def test_sctp_capture_decodes_as_sctp_chunks(make_server: ServerFactory, tmp_path: Path) -> None:
    path = tmp_path / "sctp.pcap"
    server = await make_server("tests.apps:Recording", [listener("sctp", pcap=str(path))])
    url, options = client_target(server, "sctp")
    port = server.listener("sctp").address[1]
    await echo_once(url, options, b"hello over sctp")
    await server.stop()
    lines = run_tshark("-r", str(path), "-d", f"udp.port=={port},sctp", "-T", "fields", "-e", "sctp.chunk_type")
    chunks = {name for line in lines for name in line.split(",")}
    # INIT(1) INIT-ACK(2) COOKIE-ECHO(10) COOKIE-ACK(11) DATA(0) or I-DATA(64) SACK(3) SHUTDOWN(7)...
    assert {"1", "2", "10", "11", "3"} <= chunks, lines
    assert chunks & {"0", "64"}, lines
    # both directions: datagrams to the listener's port and from it
    ports = run_tshark("-r", str(path), "-T", "fields", "-e", "udp.dstport")
    assert str(port) in ports and len(set(ports)) == 2
    payloads = run_tshark("-r", str(path), "-d", f"udp.port=={port},sctp", "-T", "fields", "-e", "data.data")
    assert sum(b"hello over sctp".hex() in line for line in payloads) == 2, payloads  # message and echo


@needs_tshark
async def test_quic_capture_decodes_with_the_listeners_key_log(make_server: ServerFactory, tmp_path: Path) -> None:
    path, keys = tmp_path / "quic.pcap", tmp_path / "keys.log"
    server = await make_server("tests.apps:Recording", [listener("quic", pcap=str(path), sslkeylogfile=str(keys))])
    url, options = client_target(server, "quic")
    port = server.listener("quic").address[1]
    await echo_once(url, options, b"hello over quic")
    await server.stop()
    lines = run_tshark(
        "-r",
        str(path),
        "-d",
        f"udp.port=={port},quic",
        "-o",
        f"tls.keylog_file:{keys}",
        "-T",
        "fields",
        "-e",
        "quic.long.packet_type",
        "-e",
        "quic.frame_type",
        "-e",
        "quic.stream_data",
    )
    text = "\n".join(lines)
    assert b"hello over quic".hex() in text.replace(":", ""), text  # the decrypted STREAM frame
    long_types = {line.split("\t")[0] for line in lines}
    assert {"0", "2"} <= {t for ts in long_types for t in ts.split(",")}, lines  # Initial and Handshake packets


def _records(path: Path) -> list[bytes]:
    data = path.read_bytes()
    magic, _, _, _, _, _, linktype = struct.unpack("<IHHiIII", data[:24])
    assert (magic, linktype) == (0xA1B2C3D4, 101)
    out, at = [], 24
    while at < len(data):
        _, _, incl, orig = struct.unpack("<IIII", data[at : at + 16])
        assert incl == orig
        out.append(data[at + 16 : at + 16 + incl])
        at += 16 + incl
    return out


def test_records_are_ip_packets_around_the_datagram(tmp_path: Path) -> None:
    writer = PcapWriter(tmp_path / "a.pcap")
    writer.write(b"four", ("10.0.0.1", 40000), ("10.0.0.2", 9899))
    writer.write(b"six666", ("::1", 1), ("::ffff:10.0.0.2", 2))
    writer.write(b"mix", ("127.0.0.1", 3), ("::1", 4))  # an IPv6 socket's view of an IPv4 peer
    writer.close()
    v4, v6, mixed = _records(tmp_path / "a.pcap")
    assert v4 == ip_udp(b"four", ("10.0.0.1", 40000), ("10.0.0.2", 9899))
    assert v4[0] == 0x45 and v4[9] == 17 and v4[12:20] == bytes([10, 0, 0, 1, 10, 0, 0, 2])
    assert struct.unpack("!HHH", v4[20:26]) == (40000, 9899, 12) and v4[28:] == b"four"
    assert sum(struct.unpack("!10H", v4[:20])) % 0xFFFF == 0  # the IPv4 header checksum holds
    assert v6[0] >> 4 == 6 and v6[6] == 17 and v6[48:] == b"six666"
    assert mixed[0] >> 4 == 6 and mixed[8:24] == socket.inet_pton(socket.AF_INET6, "::ffff:127.0.0.1")


def test_the_file_is_rotated_at_its_cap_and_keeps_the_newest(tmp_path: Path) -> None:
    path = tmp_path / "cap.pcap"
    writer = PcapWriter(path, max_bytes=4096)
    for n in range(100):
        writer.write(n.to_bytes(2, "big") + bytes(98), ("10.0.0.1", 1), ("10.0.0.2", 2))
    writer.close()
    assert writer.rotations >= 2
    assert path.stat().st_size <= 4096 and (tmp_path / "cap.pcap.1").stat().st_size <= 4096
    assert not (tmp_path / "cap.pcap.2").exists()
    kept = [int.from_bytes(r[28:30], "big") for r in _records(tmp_path / "cap.pcap.1") + _records(path)]
    assert kept == list(range(kept[0], 100)) and kept[0] > 0  # the newest, in order, the oldest gone


async def test_a_listener_without_pcap_keeps_its_plain_socket(make_server: ServerFactory, tmp_path: Path) -> None:
    server = await make_server(
        "tests.apps:Recording",
        [listener("sctp", name="plain"), listener("sctp", name="taped", pcap=str(tmp_path / "t.pcap"))],
    )
    plain, taped = server.listener("plain").driver, server.listener("taped").driver  # type: ignore[attr-defined]
    assert type(plain.sock) is socket.socket
    assert type(taped.sock) is not socket.socket


def test_capture_wraps_a_bound_socket(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as raw:
        raw.bind(("127.0.0.1", 0))
        sock = capture(raw, tmp_path / "c.pcap")
        port = sock.getsockname()[1]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
            peer.sendto(b"ping", sock.getsockname())
            data, addr = sock.recvfrom(100)
            assert data == b"ping"
            sock.sendto(b"pong", addr)
            assert peer.recv(100) == b"pong"
        sock.close()
    got, sent = _records(tmp_path / "c.pcap")
    assert got[28:] == b"ping" and sent[28:] == b"pong"
    assert struct.unpack("!HH", got[20:24]) == (addr[1], port)
    assert struct.unpack("!HH", sent[20:24]) == (port, addr[1])


def test_a_capture_that_cannot_write_stops_and_the_datagrams_go_on(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as raw:
        raw.bind(("127.0.0.1", 0))
        sock = capture(raw, tmp_path / "gone.pcap", max_bytes=4096)
        (tmp_path / "gone.pcap").unlink()  # rotating it now fails
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
            for n in range(100):
                peer.sendto(bytes(100) + n.to_bytes(2, "big"), sock.getsockname())
                assert sock.recvfrom(200)[0][-2:] == n.to_bytes(2, "big")
        assert sock.pcap._file.closed
        sock.close()
