"""The far end of ``mux bench`` in a process of its own, so server and proxy do not share the client's event loop.

Protocol: JSON lines. The worker says ``{"ready": true}`` once, then answers each request in order:
``{"op": "start", "spec": PeerSpec}`` -> ``{"ok": true, "address": [host, port]}``;
``{"op": "stop"}`` -> ``{"ok": true, "stats": {...}}``; ``{"op": "quit"}`` ends it, as does EOF.
A failure answers ``{"ok": false, "error": "..."}``. Logs go to stderr; stdout carries nothing but replies.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from mux.bench.peer import LocalPeer, PeerSpec, quiet_gc

REQUEST_TIMEOUT = 30.0
READY_TIMEOUT = 30.0


async def serve(reader: asyncio.StreamReader, reply: Callable[[dict[str, Any]], None]) -> None:
    peer = LocalPeer()
    reply({"ready": True, "pid": os.getpid()})
    try:
        while line := await reader.readline():
            try:
                request = json.loads(line)
                op = request["op"]
                if op == "start":
                    host, port = await peer.start(request["spec"])
                    quiet_gc()  # this process exists for the bench alone
                    reply({"ok": True, "address": [host, port]})
                elif op == "stop":
                    reply({"ok": True, "stats": await peer.stop()})
                elif op == "quit":
                    reply({"ok": True})
                    return
                else:
                    reply({"ok": False, "error": f"unknown op {op!r}"})
            except Exception as exc:
                logging.getLogger("mux.bench").exception("bench worker request failed")
                reply({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
    finally:
        await peer.close()


async def _main() -> int:
    out: IO[bytes] = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    sys.stdout = sys.stderr  # a stray print must not corrupt the replies

    def reply(message: dict[str, Any]) -> None:
        out.write(json.dumps(message).encode() + b"\n")
        out.flush()

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    await serve(reader, reply)
    return 0


def main() -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("mux.quic").setLevel(logging.ERROR)  # the self-signed certificate note, once per run
    from mux.loop import run as run_loop

    return run_loop(_main())


class WorkerError(Exception):
    """The worker process failed or did not answer."""


class RemotePeer:
    """A ``Peer`` backed by a worker process, started on first use and restarted after a failure."""

    def __init__(self, log_path: Path | None = None) -> None:
        self._log_path = log_path
        self._proc: asyncio.subprocess.Process | None = None
        self._log: IO[bytes] | None = None

    async def _ensure(self) -> asyncio.subprocess.Process:
        if self._proc is not None and self._proc.returncode is None:
            return self._proc
        await self.close()
        root = str(Path(__file__).resolve().parents[2])  # where ``mux`` and ``behaviours`` are importable from
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
        stderr: IO[bytes] | int = asyncio.subprocess.DEVNULL
        if self._log_path is not None:
            self._log = open(self._log_path, "ab")  # noqa: SIM115 - lives as long as the worker
            stderr = self._log
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "mux.bench.worker",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
            env=env,
        )
        self._proc = proc
        hello = await self._read(proc, READY_TIMEOUT)
        if not hello.get("ready"):
            raise WorkerError(f"the bench worker said {hello!r} instead of ready")
        return proc

    async def _read(self, proc: asyncio.subprocess.Process, timeout: float) -> dict[str, Any]:
        assert proc.stdout is not None
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), timeout)
        except TimeoutError:
            await self.close()
            raise WorkerError(f"the bench worker did not answer within {timeout:.0f} s") from None
        if not line:
            code = await proc.wait()
            self._proc = None
            raise WorkerError(f"the bench worker exited (code {code}); see its log")
        result: dict[str, Any] = json.loads(line)
        return result

    async def _request(self, message: dict[str, Any]) -> dict[str, Any]:
        proc = await self._ensure()
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(message).encode() + b"\n")
        await proc.stdin.drain()
        answer = await self._read(proc, REQUEST_TIMEOUT)
        if not answer.get("ok"):
            raise WorkerError(str(answer.get("error", answer)))
        return answer

    async def start(self, spec: PeerSpec) -> tuple[str, int]:
        host, port = (await self._request({"op": "start", "spec": spec}))["address"]
        return str(host), int(port)

    async def stop(self) -> dict[str, Any]:
        if self._proc is None or self._proc.returncode is not None:
            return {}
        stats: dict[str, Any] = (await self._request({"op": "stop"}))["stats"]
        return stats

    async def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            try:
                if proc.stdin is not None:
                    proc.stdin.write(b'{"op": "quit"}\n')
                    proc.stdin.close()
                await asyncio.wait_for(proc.wait(), 5.0)
            except (TimeoutError, OSError):
                proc.kill()
                await proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None


if __name__ == "__main__":
    sys.exit(main())
