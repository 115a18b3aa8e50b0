"""The CLI end to end: `mux serve` as a subprocess, talked to by plain aioquic and by `mux client`."""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aioquic.asyncio import connect as aioquic_connect
from aioquic.quic.configuration import QuicConfiguration

from mux import config as cfg
from mux.server import Server, StartError
from tests.conftest import ServerFactory, client_target, listener
from tests.test_config import SERVER, broken_behaviour, run_mux
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


@dataclass
class EchoServer:
    proc: subprocess.Popen[str]
    quic_port: int


@pytest.fixture
def echo_server(tmp_path: Path) -> Iterator[EchoServer]:
    """`mux serve conf/echo.yaml` as the README says, but on ports the system picks (``port: 0``), so the suite
    passes while a user's own server holds the README's ports; the QUIC port is read back from the log."""
    text = (ROOT / "conf" / "echo.yaml").read_text()
    text = re.sub(r"(?m)^(\s+port:) \d+", r"\1 0", text)
    assert text.count("port: 0") == 2, text
    config = tmp_path / "echo.yaml"
    config.write_text(text)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mux.cli", "serve", str(config)],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        seen = wait_for_line(proc, "serving quic")
        found = re.search(r"serving quic on \('[^']+', (\d+)\)", seen[-1])
        assert found, seen[-1]
        yield EchoServer(proc, int(found[1]))
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


async def test_serve_echo_yaml_with_plain_aioquic(echo_server: EchoServer) -> None:
    config = QuicConfiguration(
        is_client=True, alpn_protocols=["echo"], verify_mode=ssl.CERT_NONE, max_datagram_frame_size=65536
    )
    async with aioquic_connect(
        "127.0.0.1", echo_server.quic_port, configuration=config, create_protocol=RawEchoClient
    ) as client:
        assert isinstance(client, RawEchoClient)
        stream_id = client._quic.get_next_available_stream_id()
        payload = bytes(range(256)) * 2000
        client._quic.send_stream_data(stream_id, payload, end_stream=True)
        client._quic.send_datagram_frame(b"over the datagram path")
        client.transmit()
        await asyncio.wait_for(client.ended_event(stream_id).wait(), 10)
        assert bytes(client.received[stream_id]) == payload
        assert await asyncio.wait_for(client.datagrams.get(), 5) == b"over the datagram path"


def test_mux_client_and_sigterm_drain(echo_server: EchoServer) -> None:
    url = f"quic://127.0.0.1:{echo_server.quic_port}"
    result = subprocess.run(
        [sys.executable, "-m", "mux.cli", "client", url, "--alpn", "echo", "--insecure"],
        input="first line\nsecond line\n",
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.replace("\n", "") == "first linesecond line"
    proc = echo_server.proc
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0
    assert proc.stderr is not None
    rest = proc.stderr.read()
    assert "SIGTERM: draining" in rest and "stopped:" in rest


def test_serve_bad_config_exits_with_message(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("behaviour: behaviours.echo:Echo\nlisteners: [{transport: quic, port: 1, alpn: []}]\n")
    result = subprocess.run(
        [sys.executable, "-m", "mux.cli", "serve", str(bad)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert f"{bad}: listeners[0].alpn:" in result.stderr and "Traceback" not in result.stderr


# -- issue 9: `mux serve` and `mux client` never answer bad input with a traceback ------------------------------


@pytest.mark.parametrize("kind", ["binary", "garbage-cert", "syntax", "raising"])
def test_serve_bad_config_never_prints_a_traceback(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "server.yaml"
    if kind == "binary":
        path.write_bytes(bytes(range(256)))
        expected = f"{path}: expected a YAML text file (UTF-8), got byte 0x80 at offset 128"
    elif kind == "garbage-cert":
        garbage = tmp_path / "garbage.pem"
        garbage.write_bytes(b"-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
        path.write_text(SERVER + f"  - {{transport: quic, port: 0, alpn: [echo], certfile: {garbage}}}\n")
        expected = f"{path}: listeners[0].certfile: expected a PEM certificate chain in {garbage}: "
    else:
        module_path, text, line, error = broken_behaviour(tmp_path, kind)
        path.write_text(text)
        expected = f"{path}: behaviour: {module_path.name}:{line}: {error}"
    result = run_mux("serve", str(path), cwd=tmp_path, path=tmp_path)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(expected) and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_serve_address_in_use_names_listener_and_address(tmp_path: Path) -> None:
    holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with holder:
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
        path = tmp_path / "server.yaml"
        path.write_text(
            SERVER
            + "  - {name: first, transport: quic, port: 0, alpn: [echo]}\n"
            + f"  - {{name: taken, transport: sctp, host: 127.0.0.1, port: {port}}}\n"
        )
        result = run_mux("serve", str(path), cwd=tmp_path)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 1, result.stderr
    assert f"cannot start: listener taken (udp 127.0.0.1:{port}): address already in use" in result.stderr


async def test_server_start_error_closes_what_it_opened() -> None:
    holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with holder:
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
        config = cfg.parse(
            {
                "behaviour": "behaviours.echo:Echo",
                "listeners": [listener("sctp", "open"), listener("quic", "taken", port=port)],
            }
        )
        server = Server(config)
        with pytest.raises(StartError, match=rf"^listener taken \(udp 127\.0\.0\.1:{port}\): address already in use$"):
            await server.start()
    # the listener that did start gave its socket back
    driver = server.listener("open").driver  # type: ignore[attr-defined]
    assert driver is not None and driver.sock.fileno() == -1


@pytest.mark.parametrize("cafile", ["/nonexistent.pem", "garbage"])
async def test_client_bad_cacertfile_is_one_message(make_server: ServerFactory, tmp_path: Path, cafile: str) -> None:
    """aioquic opens the CA file only when the server's certificate arrives: a bad one raised out of the driver."""
    if cafile == "garbage":
        cafile = str(tmp_path / "garbage.pem")
        Path(cafile).write_text("garbage\n")
    server = await make_server("behaviours.echo:Echo", [listener("quic")])
    url, _ = client_target(server, "quic")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *["-m", "mux.cli", "client", url, "--alpn", "test", "--cacertfile", cafile, "--wait", "0"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(proc.communicate(), 60)
    text = stderr.decode()
    assert "Traceback" not in text, text
    assert proc.returncode == 2, text
    assert text.startswith("mux client: --cacertfile: ") and cafile in text and len(text.splitlines()) == 1, text
