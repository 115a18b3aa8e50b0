"""bench/loadgen, the Go load generator of bench/workers.py: it builds, and completes a tiny run of each workload
against `mux serve --workers 2` with every operation succeeding (no timing asserted).

The SCTP client builds its packets itself, so these runs are also what checks it speaks SCTP as mux does: the
server accepts its associations, echoes its DATA back message for message, and logs its closes as the graceful
SHUTDOWN or the ABORT that it sent. QUIC runs need quic-go's sources (golang-github-lucas-clemente-quic-go-dev).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bench import workers as bench

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(shutil.which("go") is None, reason="go not found (apt-get install golang-go)")


@pytest.fixture(scope="module")
def loadgen(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bool]:
    return bench.build_loadgen(tmp_path_factory.mktemp("loadgen"))


@pytest.fixture
def server(tmp_path: Path) -> Iterator[bench.Server]:
    config = tmp_path / "bench.yaml"
    config.write_text(bench.CONFIG)
    running = bench.Server(2, config)
    yield running
    running.stop()


def run_loadgen(binary: Path, server: bench.Server, transport: str, workload: str, *extra: str) -> dict[str, int]:
    command = [
        str(binary),
        f"-transport={transport}",
        f"-workload={workload}",
        f"-addr=127.0.0.1:{server.ports[transport]}",
        f"-sctp-port={server.sctp_port}",
        f"-start-at={time.time() + 1.0:.6f}",
        "-seconds=0.5",
        *extra,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    result: dict[str, int] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def closes(server: bench.Server, how: str) -> int:
    """Connections the server logged as closed by the peer, ``how`` being 'aborted' or 'graceful'."""
    pattern = r"closed \(aborted, by peer\)" if how == "aborted" else r"closed \(code 0, by peer\) .* error=null"
    return sum(1 for line in list(server.lines) if "transport=sctp" in line and re.search(pattern, line))


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("close", ["shutdown", "abort"])
def test_sctp_handshakes_complete_and_close_as_asked(
    loadgen: tuple[Path, bool], server: bench.Server, close: str
) -> None:
    result = run_loadgen(loadgen[0], server, "sctp", "handshake", "-concurrency=4", f"-close={close}")
    assert result["ok"] > 0 and result["failed"] == 0, result
    how = "graceful" if close == "shutdown" else "aborted"
    # every association the window counted was closed the way the client closed it, none the other way
    assert wait_for(lambda: closes(server, how) >= result["ok"]), (result, closes(server, how))
    assert closes(server, "aborted" if how == "graceful" else "graceful") == 0


def test_sctp_echoes_come_back_on_every_association(loadgen: tuple[Path, bool], server: bench.Server) -> None:
    result = run_loadgen(loadgen[0], server, "sctp", "echo", "-concurrency=8", "-window=3")
    assert result["ok"] > 0 and result["failed"] == 0, result
    # the server saw each association carry data both ways, the same bytes back as came in
    assert wait_for(lambda: closes(server, "aborted") >= 8)
    volumes = [
        (int(m[1]), int(m[2]))
        for line in list(server.lines)
        if (m := re.search(r"transport=sctp .*bytes_in=(\d+) bytes_out=(\d+)", line))
    ]
    assert len(volumes) == 8 and all(i > 0 and i == o for i, o in volumes), volumes


@pytest.mark.parametrize("workload", ["handshake", "echo"])
def test_quic_workloads_complete(loadgen: tuple[Path, bool], server: bench.Server, workload: str) -> None:
    if not loadgen[1]:
        pytest.skip("quic-go sources not found (apt-get install golang-github-lucas-clemente-quic-go-dev)")
    result = run_loadgen(loadgen[0], server, "quic", workload, "-concurrency=2", "-window=2")
    assert result["ok"] > 0 and result["failed"] == 0, result


def test_the_bench_runs_end_to_end_with_the_go_load() -> None:
    command = [sys.executable, str(ROOT / "bench" / "workers.py"), "--reps=1", "--seconds=0.5", "--transport=sctp"]
    done = subprocess.run(
        [*command, "--concurrency=4", "--load=go"],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "load: Go (bench/loadgen)" in done.stdout
    for unit in ("handshakes/s", "messages/s"):
        row = next(line for line in done.stdout.splitlines() if line.startswith(f"sctp {unit}"))
        assert re.search(r"\d\.\d\dx; +\d\.\d\d \[", row), row
    assert "failed" not in done.stdout, done.stdout


def test_idle_associations_come_up_and_stay(loadgen: tuple[Path, bool]) -> None:
    """bench/idle_cost.py end to end at a tiny scale: every idle association comes up and is still up at the end
    of the window (HEARTBEATs every 200 ms meanwhile), and the server's memory grew by what they hold."""
    from bench import idle_cost

    per, cpu, up = idle_cost.one_run(loadgen[0], 12, 1.5, 200)
    assert up == 12
    assert per > 0 and 0 <= cpu < 1.0
