"""The CLI end to end: `mux serve` as a subprocess, talked to by plain aioquic and by `mux client`."""

from __future__ import annotations

import asyncio
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aioquic.asyncio import connect as aioquic_connect
from aioquic.quic.configuration import QuicConfiguration

from tests.test_quic import RawEchoClient

ROOT = Path(__file__).resolve().parent.parent


def wait_for_line(proc: subprocess.Popen[str], needle: str, timeout: float = 15.0) -> list[str]:
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    assert proc.stderr is not None
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            if proc.poll() is not None:
                break
            continue
        seen.append(line)
        if needle in line:
            return seen
    raise AssertionError(f"{needle!r} not seen; server said:\n{''.join(seen)}")


@pytest.fixture
def echo_server() -> Iterator[subprocess.Popen[str]]:
    """`mux serve conf/echo.yaml`, exactly as the README says."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "mux.cli", "serve", "conf/echo.yaml"],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_line(proc, "serving quic")
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


async def test_serve_echo_yaml_with_plain_aioquic(echo_server: subprocess.Popen[str]) -> None:
    config = QuicConfiguration(
        is_client=True, alpn_protocols=["echo"], verify_mode=ssl.CERT_NONE, max_datagram_frame_size=65536
    )
    async with aioquic_connect("127.0.0.1", 4433, configuration=config, create_protocol=RawEchoClient) as client:
        assert isinstance(client, RawEchoClient)
        stream_id = client._quic.get_next_available_stream_id()
        payload = bytes(range(256)) * 2000
        client._quic.send_stream_data(stream_id, payload, end_stream=True)
        client._quic.send_datagram_frame(b"over the datagram path")
        client.transmit()
        await asyncio.wait_for(client.ended_event(stream_id).wait(), 10)
        assert bytes(client.received[stream_id]) == payload
        assert await asyncio.wait_for(client.datagrams.get(), 5) == b"over the datagram path"


def test_mux_client_and_sigterm_drain(echo_server: subprocess.Popen[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mux.cli", "client", "quic://127.0.0.1:4433", "--alpn", "echo", "--insecure"],
        input="first line\nsecond line\n",
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.replace("\n", "") == "first linesecond line"
    echo_server.send_signal(signal.SIGTERM)
    assert echo_server.wait(15) == 0
    assert echo_server.stderr is not None
    rest = echo_server.stderr.read()
    assert "SIGTERM: draining" in rest and "stopped:" in rest


def test_serve_bad_config_exits_with_message(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("behaviour: behaviours.echo:Echo\nlisteners: [{transport: quic, port: 1, alpn: []}]\n")
    result = subprocess.run(
        [sys.executable, "-m", "mux.cli", "serve", str(bad)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert f"{bad}: listeners[0].alpn:" in result.stderr and "Traceback" not in result.stderr
