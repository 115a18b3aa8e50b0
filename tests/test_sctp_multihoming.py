"""Multi-homed SCTP between two hosts made of network namespaces, each with two veth links to the other.

The server (``mux serve``, its listener bound to both of its addresses) and the client (tests/netns/
multihomed_client.py, bound to both of its) each run in a namespace of their own. Mid-transfer, link 1 goes down;
the association must fail over to link 2 within pathmaxrxt x RTO.Max (plus a round of slack), lose no message, and
tell both behaviours; when the link comes back, traffic returns to it. Needs root (``ip netns``); skipped otherwise.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RTO_MAX_MS = 400
PATHMAXRXT = 2
OPTIONS = {
    "rtoinfo": {"initial": 300, "min": 100, "max": RTO_MAX_MS},
    "paddrparams": {"pathmaxrxt": PATHMAXRXT, "hbinterval": 300},
}


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2's ip command is missing"
    name = f"muxprobe{random.randrange(1 << 20)}"
    if subprocess.run(["ip", "netns", "add", name], capture_output=True).returncode != 0:
        return "ip netns add failed (no namespace support here)"
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return None


pytestmark = pytest.mark.skipif(bool(_why_not()), reason=_why_not() or "")


def _ip(*args: str, ns: str | None = None) -> None:
    cmd = ["ip", "netns", "exec", ns, "ip", *args] if ns else ["ip", *args]
    subprocess.run(cmd, check=True, capture_output=True)


class Hosts:
    """Two namespaces A (client) and B (server) joined by two veth pairs on 10.<n>.<k>.0/24, k = 1, 2."""

    def __init__(self) -> None:
        tag = random.randrange(1 << 16)
        self.a, self.b = f"muxA{tag}", f"muxB{tag}"
        self.octet = 100 + tag % 100
        self.links = [(f"mxa{i}{tag}", f"mxb{i}{tag}") for i in (1, 2)]

    def client_addr(self, k: int) -> str:
        return f"10.{self.octet}.{k}.1"

    def server_addr(self, k: int) -> str:
        return f"10.{self.octet}.{k}.2"

    def create(self) -> None:
        for ns in (self.a, self.b):
            _ip("netns", "add", ns)
            _ip("link", "set", "lo", "up", ns=ns)
        for k, (va, vb) in enumerate(self.links, start=1):
            _ip("link", "add", va, "type", "veth", "peer", "name", vb)
            _ip("link", "set", va, "netns", self.a)
            _ip("link", "set", vb, "netns", self.b)
            _ip("addr", "add", f"{self.client_addr(k)}/24", "dev", va, ns=self.a)
            _ip("addr", "add", f"{self.server_addr(k)}/24", "dev", vb, ns=self.b)
            _ip("link", "set", va, "up", ns=self.a)
            _ip("link", "set", vb, "up", ns=self.b)

    def link(self, k: int, up: bool) -> None:
        _ip("link", "set", self.links[k - 1][0], "up" if up else "down", ns=self.a)

    def destroy(self) -> None:
        for ns in (self.a, self.b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@pytest.fixture
def hosts() -> Iterator[Hosts]:
    h = Hosts()
    try:
        h.create()
        yield h
    finally:
        h.destroy()


def _serve(hosts: Hosts, tmp_path: Path, encapsulation: str) -> tuple[subprocess.Popen[str], int]:
    """The server in namespace B, on both its addresses; the UDP port it got (over UDP) or its SCTP port (on IP)."""
    conf = tmp_path / "multihomed.yaml"
    listener: dict[str, object] = {"transport": "sctp", "host": [hosts.server_addr(1), hosts.server_addr(2)], **OPTIONS}
    if encapsulation == "none":
        listener.update(encapsulation="none", sctp_port=0)
    else:
        listener["port"] = 0
    conf.write_text(json.dumps({"behaviour": "tests.apps:PathEcho", "listeners": [listener]}))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen(
        ["ip", "netns", "exec", hosts.b, sys.executable, "-u", "-m", "mux.cli", "serve", str(conf)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert server.stdout is not None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = server.stdout.readline()
        found = re.search(r"SCTP port \d+ over UDP \('[^']+', (\d+)\)|SCTP \S+ port (\d+) on IP", line)
        if found:
            return server, int(found[1] or found[2])
        if not line and server.poll() is not None:
            break
    server.kill()
    raise AssertionError(f"the server did not start: {server.stdout.read()}")


@pytest.mark.parametrize("encapsulation", ["udp", "none"])
def test_a_two_path_association_survives_a_cut_mid_transfer(hosts: Hosts, tmp_path: Path, encapsulation: str) -> None:
    """Over UDP (RFC 6951), and again with SCTP directly on IP (raw sockets: root, as namespaces need anyway)."""
    server, port = _serve(hosts, tmp_path, encapsulation)
    options = {**OPTIONS, "encapsulation": encapsulation}
    count, interval = 300, 0.01
    client = subprocess.Popen(
        ["ip", "netns", "exec", hosts.a, sys.executable, "-u", str(ROOT / "tests/netns/multihomed_client.py"),
         hosts.server_addr(1), str(port), f"{hosts.client_addr(1)},{hosts.client_addr(2)}", str(count),
         str(interval), json.dumps(options)],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert client.stdout is not None
        assert client.stdout.readline().strip() == "started"
        started = time.monotonic()
        time.sleep(0.8)  # about 80 messages on link 1, and both paths confirmed
        hosts.link(1, up=False)
        cut_at = time.monotonic() - started
        time.sleep(1.6)
        hosts.link(1, up=True)
        up_at = time.monotonic() - started
        out, err = client.communicate(timeout=60)
    finally:
        client.kill()
        server.terminate()
        server_out = server.communicate(timeout=20)[0]
    report = json.loads(out.strip().splitlines()[-1])
    # nothing lost, nothing twice, in order
    assert report["echoes"] == [f"m{i:05d}" for i in range(count)], err[-2000:]
    events = [(t, kind, addr[0], state) for t, kind, addr, state in report["events"]]
    s1, s2 = hosts.server_addr(1), hosts.server_addr(2)
    assert any(kind == "path_changed" and addr == s2 and state == "confirmed" for _t, kind, addr, state in events)
    over = [t for t, kind, addr, _s in events if kind == "peer_address_changed" and addr == s2]
    assert over, events
    # within pathmaxrxt + 1 expiries of at most RTO.Max, plus the time the client took to notice the cut
    assert cut_at < over[0] <= cut_at + (PATHMAXRXT + 1) * RTO_MAX_MS / 1000 + 0.5, (cut_at, events)
    assert any(kind == "path_changed" and addr == s1 and state == "unreachable" for _t, kind, addr, state in events)
    back = [t for t, kind, addr, _s in events if kind == "peer_address_changed" and addr == s1]
    assert back and back[-1] > up_at, (up_at, events)
    assert report["peer"][0] == s1
    assert {p["state"] for p in report["paths"]} == {"active"}
    # the server's behaviour heard of the client's second address, and of its own failover
    assert f"PATH {hosts.client_addr(2)} confirmed" in server_out, server_out[-3000:]
    assert f"PRIMARY {hosts.client_addr(2)}" in server_out, server_out[-3000:]


@pytest.mark.skipif(not Path("/usr/lib/usrsctp/echo_server").exists(), reason="Debian's libusrsctp-examples missing")
def test_multi_homed_with_usrsctp_on_ip(hosts: Hosts, tmp_path: Path) -> None:
    """usrsctp's echo_server on IP (UDP port 0) in namespace B lists both its addresses in its INIT-ACK; our
    multi-homed client fails over to the second when link 1 goes down, and every echo still comes back."""
    server = subprocess.Popen(
        ["ip", "netns", "exec", hosts.b, "/usr/lib/usrsctp/echo_server", "0", "0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(0.5)  # its raw sockets open at once; nothing to read back
    count, interval = 200, 0.01
    options = {**OPTIONS, "encapsulation": "none"}
    client = subprocess.Popen(
        ["ip", "netns", "exec", hosts.a, sys.executable, "-u", str(ROOT / "tests/netns/multihomed_client.py"),
         hosts.server_addr(1), "7", f"{hosts.client_addr(1)},{hosts.client_addr(2)}", str(count),
         str(interval), json.dumps(options)],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert client.stdout is not None
        assert client.stdout.readline().strip() == "started", client.stderr.read() if client.stderr else ""
        started = time.monotonic()
        time.sleep(0.6)
        hosts.link(1, up=False)
        cut_at = time.monotonic() - started
        out, err = client.communicate(timeout=90)
    finally:
        client.kill()
        server.kill()
        server.wait(10)
    report = json.loads(out.strip().splitlines()[-1])
    assert report["echoes"] == [f"m{i:05d}" for i in range(count)], err[-2000:]
    events = [(t, kind, addr[0], state) for t, kind, addr, state in report["events"]]
    s2 = hosts.server_addr(2)
    assert any(kind == "path_changed" and addr == s2 and state == "confirmed" for _t, kind, addr, state in events)
    over = [t for t, kind, addr, _s in events if kind == "peer_address_changed" and addr == s2]
    assert over and over[0] > cut_at, (cut_at, events)
