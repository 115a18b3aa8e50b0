"""``workers: N``: one supervisor process and N worker processes sharing every listener's UDP port.

The supervisor binds each listener N times with SO_REUSEPORT (socket i is worker i's; a port of 0 becomes the
port the first bind got), attaches the steering program of ``mux.steering`` to each group, and forks the
workers, each a whole ``mux.server.Server`` on its own socket. It keeps every socket open for the life of the
server: an index in a reuseport group is a slot that closing the socket would hand to another (the kernel moves
the last socket into it), so a crashed worker is forked again onto the same socket, and what arrived for it
meanwhile waits in its buffer. Worker i draws its SCTP tags and QUIC connection IDs with index i; the SCTP
cookie secret is the supervisor's, the same in every worker.

Signals: SIGTERM or SIGINT drains every worker (a second one stops them at once), SIGHUP and SIGUSR1 go to each
worker. A worker that exits while the server is not draining is forked again; one that fails three times in a
row within a second of starting makes the supervisor give up and stop the rest (exit 1): a bad certificate would
otherwise loop forever. Workers run in their own process group (a terminal's Ctrl-C reaches the supervisor
alone, which then drains them) and get SIGTERM if the supervisor dies.

The pool's limits are divided, not shared: each worker admits ``max_connections / N`` and ``num_acceptors / N``
(rounded up). Sharing would need every admission to cross processes; the price of dividing is that a worker
whose share is full refuses while another has room, since a peer's worker is its hash's, not the least loaded.
"""

from __future__ import annotations

import ctypes
import logging
import math
import os
import signal
import socket
import time
from collections.abc import Callable
from typing import Any

from mux import steering
from mux.config import listener_name
from mux.preflight import describe_bind_error, udp_address

log = logging.getLogger("mux.workers")

#: a worker that exits this soon after it started failed to start, rather than crashed while serving
QUICK_EXIT = 1.0
#: quick exits in a row after which the supervisor gives up
MAX_QUICK_EXITS = 3
_WATCHED = {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1}
_PR_SET_PDEATHSIG = 1


def resolve_count(value: int | str) -> int:
    """``workers:`` as a number of processes (``auto``: the cores this process may run on)."""
    if value == "auto":
        return max(1, len(os.sched_getaffinity(0)))
    return int(value)


def bind_group(host: str, port: int, count: int, transport: str) -> list[socket.socket]:
    """``count`` sockets on one address with SO_REUSEPORT, in index order, steered by ``transport``'s program."""
    family, _, _, _, sockaddr = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE)[0]

    def new() -> socket.socket:
        sock = socket.socket(family, socket.SOCK_DGRAM)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        return sock

    # A probe without SO_REUSEPORT first: it fails if anyone holds the port (another server's reuseport group
    # included, which our sockets would otherwise silently join) and makes port 0 a port of our own.
    probe = new()
    try:
        probe.bind(sockaddr)
        sockaddr = (sockaddr[0], probe.getsockname()[1], *sockaddr[2:])
    finally:
        probe.close()
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = new()
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(sockaddr)  # the group's index of a socket is its binding order
        steering.attach(socks[0], steering.program_for(transport, count))
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks


def per_worker(config: Any, count: int, index: int = 0) -> Any:
    """The config worker ``index`` runs: the pool's limits divided among the workers; its own control socket
    (``PATH.<index>``) and metrics port (``port + index``), since each worker is a server of its own."""
    pool = config.pool
    shares = {
        "max_connections": math.ceil(pool.max_connections / count),
        "num_acceptors": math.ceil(pool.num_acceptors / count),
    }
    update: dict[str, Any] = {"pool": pool.model_copy(update=shares)}
    control = getattr(config, "control", None)
    if control is not None and count > 1:
        update["control"] = control.model_copy(update={"socket": f"{control.socket}.{index}"})
    metrics = getattr(config, "metrics", None)
    if metrics is not None and count > 1 and metrics.port:
        update["metrics"] = metrics.model_copy(update={"port": metrics.port + index})
    return config.model_copy(update=update)


def with_shared_certificates(config: Any) -> Any:
    """A QUIC listener without a certificate gets the self-signed one here, once: workers making it each at
    start would race on the cached files and could serve different certificates."""
    from mux.quic.certs import self_signed

    listeners = []
    for options in config.listeners:
        if options.transport == "quic" and options.certfile is None:
            certfile, keyfile = self_signed(options.host)
            options = options.model_copy(update={"certfile": certfile, "keyfile": keyfile})
        listeners.append(options)
    return config.model_copy(update={"listeners": listeners})


class _WorkerName(logging.Filter):
    """Every log line of worker i names it: ``mux.server[i]``."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self.suffix = f"[{index}]"

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.endswith(self.suffix):
            record.name += self.suffix
        return True


class Supervisor:
    def __init__(self, config: Any, count: int, run_server: Callable[[Any], int]) -> None:
        self.config = config
        self.count = count
        self.run_server = run_server
        self.secret = os.urandom(32)
        self.groups: dict[str, list[socket.socket]] = {}
        self.pids: dict[int, int] = {}  # pid -> worker index
        self.started: dict[int, float] = {}  # index -> when it was forked
        self.quick_exits = [0] * count
        self.restart_at: dict[int, float] = {}
        self.stopping = 0  # SIGTERM/SIGINT received
        self.exit_code = 0

    def bind(self) -> bool:
        """Bind every listener's group; False (logged, one line) if one cannot be."""
        for options in self.config.listeners:
            name = listener_name(options)
            if not isinstance(options.host, str):
                log.error("cannot start: listener %s: a multi-homed listener (host: a list) needs workers: 1", name)
                self.close()
                return False
            try:
                socks = bind_group(options.host, options.port, self.count, options.transport)
            except OSError as exc:
                where = f"listener {name} ({udp_address(options.host, options.port)})"
                log.error("cannot start: %s: %s", where, describe_bind_error(exc))
                self.close()
                return False
            self.groups[name] = socks
            log.info("serving %s on %s with %d workers", name, socks[0].getsockname()[:2], self.count)
        return True

    def close(self) -> None:
        for socks in self.groups.values():
            for sock in socks:
                sock.close()
        self.groups.clear()

    def run(self) -> int:
        if not self.bind():
            return 1
        self.config = with_shared_certificates(self.config)
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, _WATCHED)
        try:
            for index in range(self.count):
                self._fork(index, previous)
            while self.pids or self.restart_at:
                self._step(previous)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
            self.close()
        log.info("stopped: %d workers", self.count)
        return self.exit_code

    def _step(self, mask: set[signal.Signals | int]) -> None:
        now = time.monotonic()
        due = [i for i, at in self.restart_at.items() if at <= now]
        for index in due:
            del self.restart_at[index]
            self._fork(index, mask)
        wait = min([at - now for at in self.restart_at.values()] + [1.0])
        info = signal.sigtimedwait(_WATCHED, max(wait, 0.01))
        self._reap()
        if info is None:
            return
        signum = signal.Signals(info.si_signo)
        if signum in (signal.SIGTERM, signal.SIGINT):
            self.stopping += 1
            self.restart_at.clear()
            if self.stopping == 1:
                log.info("%s: draining %d workers", signum.name, len(self.pids))
            else:
                log.info("%s again: stopping the workers now", signum.name)
            self._signal_all(signal.SIGTERM)
        elif signum in (signal.SIGHUP, signal.SIGUSR1):
            self._signal_all(signum)

    def _signal_all(self, signum: int) -> None:
        for pid in self.pids:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            index = self.pids.pop(pid, None)
            if index is None:
                continue
            code = os.waitstatus_to_exitcode(status)
            how = f"exit code {code}" if code >= 0 else f"signal {signal.Signals(-code).name}"
            if self.stopping:
                log.info("worker %d (pid %d) stopped: %s", index, pid, how)
                if code != 0 and self.exit_code == 0 and self.stopping == 1:
                    self.exit_code = 1
                continue
            lived = time.monotonic() - self.started[index]
            self.quick_exits[index] = self.quick_exits[index] + 1 if lived < QUICK_EXIT else 0
            if self.quick_exits[index] >= MAX_QUICK_EXITS:
                log.error(
                    "worker %d (pid %d) exited (%s) %d times within %.0f s of starting: giving up",
                    index,
                    pid,
                    how,
                    self.quick_exits[index],
                    QUICK_EXIT,
                )
                self.exit_code = 1
                self.stopping = 1
                self.restart_at.clear()
                self._signal_all(signal.SIGTERM)
                continue
            delay = 0.0 if self.quick_exits[index] == 0 else QUICK_EXIT * self.quick_exits[index]
            log.warning("worker %d (pid %d) exited (%s) after %.1f s: restarting it", index, pid, how, lived)
            self.restart_at[index] = time.monotonic() + delay

    def _fork(self, index: int, mask: set[signal.Signals | int]) -> None:
        pid = os.fork()
        if pid:
            self.pids[pid] = index
            self.started[index] = time.monotonic()
            return
        code = 1
        try:
            code = self._worker(index, mask)
        except BaseException as exc:  # the worker's own failure: logged there; never back into the supervisor
            log.error("worker %d failed", index, exc_info=exc)
        finally:
            logging.shutdown()
            os._exit(code)

    def _worker(self, index: int, mask: set[signal.Signals | int]) -> int:
        os.setpgid(0, 0)
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        except (OSError, AttributeError):
            pass
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the server installs its own SIGHUP handler
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        mine: dict[str, socket.socket] = {}
        for name, socks in self.groups.items():
            for i, sock in enumerate(socks):
                if i == index:
                    mine[name] = sock
                else:
                    sock.close()  # the supervisor's copy keeps it in the group
        steering.install(steering.Steering(index, self.count, self.secret, mine))
        os.environ["MUX_WORKER"] = str(index)
        for handler in logging.getLogger().handlers:
            handler.addFilter(_WorkerName(index))
        log.info("worker %d of %d: pid %d", index, self.count, os.getpid())
        return self.run_server(per_worker(self.config, self.count, index))


def serve(config: Any, count: int, run_server: Callable[[Any], int]) -> int:
    """Run ``count`` workers of ``config`` (``run_server(config)`` in each) until SIGTERM; the exit code."""
    return Supervisor(config, count, run_server).run()
