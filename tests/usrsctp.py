"""Run usrsctp's example programs (Debian ``libusrsctp-examples``) as interop peers, and parse what they print.

Everything here is blocking; async tests call it through ``asyncio.to_thread`` so an in-process mux server keeps
running meanwhile. Output goes to a file (never a pipe we might forget to drain), because Debian builds these
programs with SCTP debug logging on stdout: a tsctp run writes ~12 debug lines per message. ``keep=`` filters
that through ``grep`` so only the lines worth parsing are stored.

Facts learnt by running them (usrsctp 0.9.5, Debian):

* UDP port 0 means SCTP directly on IP: ``usrsctp_init`` always opens raw protocol-132 sockets (IPv4 and IPv6)
  when it may (root), and with a local UDP port of 0 it opens no UDP socket; a remote UDP port of 0 sends on IP.
  Every program sets ``blackhole`` to 2: a packet for a port it does not use is dropped without an answer, so
  programs running at once, and mux endpoints beside them, do not abort each other's associations; except a
  SHUTDOWN-ACK, which usrsctp answers with a SHUTDOWN-COMPLETE whatever its port and ``blackhole`` (§8.4 5).
  The raw sockets are open whenever a program runs as root, UDP encapsulation or not. They compute
  the CRC32c on loopback too (mux counts none as bad).
* UDP encapsulation needs explicit ports: each program binds its local UDP port (``echo_server``'s first argument,
  ``client``'s fourth, ``tsctp -E``) and sends to the remote one it is given. A server answers the UDP source
  port a packet came from. A program whose UDP port is taken does not fail: it silently never hears anything.
* ``echo_server [local_udp [remote_udp]]`` listens on SCTP port 7 and sends every complete message of up to
  10240 bytes back on the same stream, with the same PPID and unordered flag. It prints one
  ``Msg of length N received ...`` line per message (block-buffered unless run under ``stdbuf -oL``) and
  ``Notification of length N received.`` per event, which tells how an association ended: a graceful one
  gives 12 (SHUTDOWN_EVENT) then 20 (ASSOC_CHANGE SHUTDOWN_COMP, no info); an ABORT gives only an
  ASSOC_CHANGE COMM_LOST of 20 + the ABORT chunk's length.
* ``client addr port local_port local_udp remote_udp`` sends each stdin line (``fgets`` into 80 bytes, newline
  included, so a line of more than 79 bytes goes out in pieces) as one message, PPID 0, stream 0. At EOF it
  shuts down (SHUTDOWN, not ABORT) and exits 0 once the association is gone. Replies are ``write``-n raw to
  stdout as they arrive; its notification lines are printf-ed (block-buffered, so they appear at exit).
* ``tsctp`` with no address is a server on ``-p`` (default 5001) that handles any number of associations, one
  thread each, and prints per association, once the peer has shut down (after ``sctp_recvv: ...`` from
  ``perror`` when the association was aborted instead)::

      length_of_first_message, messages, recv_calls, bytes, seconds, bytes_per_second, notifications

  As a client (``tsctp [opts] addr``) it sends ``-n`` messages (default 1024; the last carries SCTP_EOF) or
  sends for ``-T`` seconds, shuts down, and prints ``Sending of N messages of length L took S seconds.`` and
  ``Throughput was X Byte/sec.``. Its messages are ``-l`` bytes of ``b'b'`` on stream 0, PPID 0; the server
  reads with a 64 KiB buffer, so lengths up to 65536 are counted in one recv call.
* usrsctp delays SACKs by up to 200 ms (tsctp turns on immediate SACKs for itself). Over UDP it assumes an MTU
  of 1500 even on loopback: datagrams of at most 1472 bytes, so one 1200-byte message per packet and 1444-byte
  fragments of bigger ones (seen through a UDP proxy). mux's ``pmtu: 1500`` makes the same packets.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import random
import re
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

#: where Debian installs the programs; override with USRSCTP_DIR
DIR = Path(os.environ.get("USRSCTP_DIR", "/usr/lib/usrsctp"))
#: the SCTP port echo_server listens on (hard-coded in it)
ECHO_PORT = 7
#: the SCTP port discard_server listens on (hard-coded in it)
DISCARD_PORT = 9
#: the largest message echo_server echoes (its receive buffer)
ECHO_MAX = 10240

_TSCTP_RECEIVED = re.compile(r"^(\d+), (\d+), (\d+), (\d+), ([^,]+), ([^,]+), (\d+)$", re.M)
_TSCTP_SENT = re.compile(r"^Sending of (\d+) messages of length (\d+) took ([\d.]+) seconds\.$", re.M)
_ECHOED = re.compile(r"^Msg of length (\d+) received .* PPID (\d+)", re.M)
#: the same anywhere in a line (debug output without a newline may come first)
RECEIVED = re.compile(r"Msg of length (\d+) received .*? PPID (\d+)")
NOTIFICATION = re.compile(r"^Notification of length (\d+) received\.$", re.M)
#: echo_server's notification lengths at the end of a graceful association: SHUTDOWN_EVENT, SHUTDOWN_COMP
ECHO_GRACEFUL_END = [12, 20]


def path(name: str) -> Path:
    return DIR / name


def missing(*names: str) -> str | None:
    """Why the programs cannot run here, or None when they all can (a pytest skip reason)."""
    absent = [name for name in names if not os.access(path(name), os.X_OK)]
    if absent:
        return f"usrsctp programs {', '.join(absent)} not found in {DIR} (apt-get install libusrsctp-examples)"
    return None


def _ephemeral_floor() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_udp_ports(count: int = 1, host: str = "127.0.0.1") -> list[int]:
    """Distinct UDP ports free right now: the programs take explicit numbers, not port 0.

    They are drawn below the kernel's ephemeral range: a port the kernel handed out for a port-0 bind and got
    back would be handed out again to the next port-0 socket (another test's) before the program binds it.
    """
    floor = _ephemeral_floor()
    low = 10000 if floor > 12000 else 1024
    chosen: list[int] = []
    while len(chosen) < count:
        port = random.randrange(low, floor)
        # the wildcard too: a program binds INADDR_ANY, which any bound address of that port blocks
        if port not in chosen and not udp_port_taken(port, host) and not udp_port_taken(port, "0.0.0.0"):
            chosen.append(port)
    return chosen


def free_udp_port(host: str = "127.0.0.1") -> int:
    return free_udp_ports(1, host)[0]


def udp_port_taken(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


class Program:
    """One running program (a usrsctp one, or any other) in its own process group, its output in a file."""

    def __init__(
        self,
        argv: Sequence[object],
        *,
        stdin: bytes | None = None,
        keep: str | None = None,
        quiet: bool = False,
        line_buffered: bool = False,
        cwd: str | Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.argv = [str(arg) for arg in argv]
        self.name = name = Path(self.argv[0]).name
        if line_buffered and shutil.which("stdbuf"):
            self.argv = ["stdbuf", "-oL", *self.argv]
        fd, self._out_path = tempfile.mkstemp(prefix=f"usrsctp-{name}-", suffix=".out")
        out = os.fdopen(fd, "ab")
        self.filter: subprocess.Popen[bytes] | None = None
        try:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                stdout=subprocess.DEVNULL if quiet else subprocess.PIPE if keep else out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=cwd,
                env={**os.environ, **env} if env else None,
            )
            if keep and not quiet:
                assert self.proc.stdout is not None
                self.filter = subprocess.Popen(
                    ["grep", "-E", "--line-buffered", keep],
                    stdin=self.proc.stdout,
                    stdout=out,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
                self.proc.stdout.close()  # grep holds the read end; tsctp gets SIGPIPE if grep dies
        finally:
            out.close()
        if stdin is not None:
            assert self.proc.stdin is not None
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.write(stdin)
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.close()

    @property
    def returncode(self) -> int | None:
        return self.proc.poll()

    def output(self) -> str:
        return Path(self._out_path).read_bytes().decode("utf-8", "replace")

    def raw_output(self) -> bytes:
        return Path(self._out_path).read_bytes()

    def wait(self, timeout: float) -> int:
        """The exit status; raises ``subprocess.TimeoutExpired`` (the program keeps running) after ``timeout``."""
        code = self.proc.wait(timeout)
        if self.filter is not None:
            self.filter.wait(5)
        return code

    def wait_for(self, pattern: re.Pattern[str], timeout: float, count: int = 1) -> list[re.Match[str]]:
        """The first ``count`` matches of ``pattern`` in the output, polling until they are there."""
        deadline = time.monotonic() + timeout
        while True:
            matches = list(pattern.finditer(self.output()))
            if len(matches) >= count:
                return matches[:count]
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: no {count} x {pattern.pattern!r} within {timeout}s:\n{self.tail()}")
            time.sleep(0.02)

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.output().splitlines()[-lines:])

    def stop(self) -> None:
        """End the program (SIGTERM, then SIGKILL) and its output filter; safe to call twice."""
        for proc in (self.proc, self.filter):
            if proc is None or proc.poll() is not None:
                continue
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 15)
            try:
                proc.wait(3)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, 9)
                proc.wait(3)

    def remove_output(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._out_path)

    def __enter__(self) -> Program:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.remove_output()

    def __repr__(self) -> str:
        return f"<Program {' '.join(self.argv)} rc={self.returncode}>"


_SILENCER = "#include <stdint.h>\nvoid usrsctp_sysctl_set_sctp_debug_on(uint32_t on) { (void)on; }\n"
#: every socket the program makes offers I-DATA (RFC 8260): usrsctp has it, off by default, and no example program
#: turns it on. The options and their values are usrsctp's (usrsctp.h; its own fuzzers set them the same way):
#: SCTP_FRAGMENT_INTERLEAVE level 2 first, which SCTP_INTERLEAVING_SUPPORTED requires.
_INTERLEAVING = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdint.h>
#include <sys/socket.h>
struct socket;
extern int usrsctp_setsockopt(struct socket *, int, int, const void *, socklen_t);
typedef struct socket *(*socket_fn)(int, int, int, void *, void *, uint32_t, void *);
struct socket *usrsctp_socket(int domain, int type, int protocol, void *receive_cb, void *send_cb,
                              uint32_t sb_threshold, void *ulp_info) {
    static socket_fn real;
    if (real == 0) real = (socket_fn)dlsym(RTLD_NEXT, "usrsctp_socket");
    struct socket *so = real(domain, type, protocol, receive_cb, send_cb, sb_threshold, ulp_info);
    if (so != 0) {
        int level = 2;                           /* SCTP_FRAG_LEVEL_2 */
        struct { uint32_t id, value; } on = {0, 1};  /* SCTP_FUTURE_ASSOC: on */
        usrsctp_setsockopt(so, 132, 0x00000010, &level, sizeof level);  /* IPPROTO_SCTP, SCTP_FRAGMENT_INTERLEAVE */
        usrsctp_setsockopt(so, 132, 0x00001206, &on, sizeof on);        /* SCTP_INTERLEAVING_SUPPORTED */
    }
    return so;
}
"""


@functools.cache
def _shim(silent: bool, interleaving: bool) -> Path | None:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    folder = Path(tempfile.mkdtemp(prefix="usrsctp-shim-"))
    atexit.register(shutil.rmtree, folder, True)
    source, library = folder / "shim.c", folder / "shim.so"
    source.write_text((_SILENCER if silent else "") + (_INTERLEAVING if interleaving else ""))
    built = subprocess.run([cc, "-shared", "-fPIC", "-O2", "-o", library, source, "-ldl"], capture_output=True)
    return library if built.returncode == 0 else None


def silencer() -> Path | None:
    """An LD_PRELOAD library that turns off the debug logging Debian builds into the programs, or None.

    The programs switch it on by calling ``usrsctp_sysctl_set_sctp_debug_on`` in libusrsctp; ours takes the call
    and does nothing, so usrsctp keeps its default (off). tsctp then runs 2-4x faster on loopback, since it no
    longer formats and writes a dozen lines per message. Needs a C compiler; built once per process.
    """
    return _shim(True, False)


def interleaving() -> Path | None:
    """An LD_PRELOAD library that makes the programs offer I-DATA (``_INTERLEAVING``), or None without a compiler."""
    return _shim(False, True)


def _preload(silent: bool, interleaving: bool = False) -> dict[str, str] | None:
    if not silent and not interleaving:
        return None
    library = _shim(silent, interleaving)
    if library is None:
        raise RuntimeError("cannot build the LD_PRELOAD shim for the usrsctp programs without a C compiler (cc)")
    return {"LD_PRELOAD": str(library)}


def has_raw_sctp_socket(pid: int) -> bool:
    """Whether process ``pid`` holds a raw IP socket of protocol 132 (/proc/net/raw shows the protocol as the
    local port, 0x0084); usrsctp_init opens them for SCTP on IP, for which it has no UDP port to wait for."""
    inodes: set[str] = set()
    for table in ("/proc/net/raw", "/proc/net/raw6"):
        with contextlib.suppress(OSError), open(table) as f:
            for line in f.read().splitlines()[1:]:
                fields = line.split()
                if len(fields) > 9 and fields[1].endswith(":0084"):
                    inodes.add(fields[9])
    try:
        links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
    except OSError:
        return False
    return any(link.startswith("socket:[") and link[8:-1] in inodes for link in links)


def wait_listening(program: Program, udp_port: int, timeout: float = 5.0) -> None:
    """Return once ``program`` has bound ``udp_port`` (and had a moment to listen on its SCTP port); with
    ``udp_port`` 0 (SCTP on IP) once it holds its raw SCTP socket.

    usrsctp drops an INIT to a port nobody listens on without a word (blackhole), and the peer would then wait
    a whole RTO before retrying, so a test that starts its client too early only gets slow.
    """
    deadline = time.monotonic() + timeout
    while not (udp_port_taken(udp_port) if udp_port else has_raw_sctp_socket(program.proc.pid)):
        if program.returncode is not None:
            raise RuntimeError(f"{program.name} exited with {program.returncode}:\n{program.tail()}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{program.name} did not bind UDP port {udp_port} (0: a raw socket) within {timeout}s")
        time.sleep(0.01)
    time.sleep(0.1)


# -- the programs -----------------------------------------------------------------------------------------------


def echo_server(local_udp: int, remote_udp: int, *, interleaving: bool = False) -> Program:
    """``interleaving``: it offers I-DATA too (see ``interleaving()``)."""
    program = Program(
        [path("echo_server"), local_udp, remote_udp], line_buffered=True, env=_preload(False, interleaving)
    )
    wait_listening(program, local_udp)
    return program


def discard_server(local_udp: int, remote_udp: int) -> Program:
    """``discard_server [local_udp [remote_udp]]``: listens on SCTP port ``DISCARD_PORT`` and prints a ``Msg of
    length N received ...`` line per message, as echo_server does, without answering. Runs without its debug
    logging (``silencer``) when a compiler can build it: the debug lines, some without a newline, get in front
    of the ``Msg`` lines."""
    library = silencer()
    env = {"LD_PRELOAD": str(library)} if library is not None else None
    program = Program([path("discard_server"), local_udp, remote_udp], line_buffered=True, env=env)
    wait_listening(program, local_udp)
    return program


def echoed_messages(program: Program) -> list[tuple[int, int]]:
    """(length, ppid) of each message echo_server (or discard_server) reported receiving."""
    return [(int(m[1]), int(m[2])) for m in _ECHOED.finditer(program.output())]


def notification_lengths(program: Program) -> list[int]:
    """The length of each notification echo_server reported, in order (see ECHO_GRACEFUL_END)."""
    return [int(m[1]) for m in NOTIFICATION.finditer(program.output())]


def client(lines: bytes, *, remote_udp: int, local_udp: int, port: int = ECHO_PORT, host: str = "127.0.0.1") -> Program:
    """usrsctp's ``client``: connects, sends ``lines`` one message per line, shuts down at EOF."""
    return Program([path("client"), host, port, 0, local_udp, remote_udp], stdin=lines)


def tsctp_server(
    local_udp: int, port: int, *, extra: Iterable[object] = (), silent: bool = False, interleaving: bool = False
) -> Program:
    """A tsctp server; ``silent`` runs it without its debug logging (see ``silencer``), ``interleaving`` offering
    I-DATA (see ``interleaving()``)."""
    program = Program(
        [path("tsctp"), "-E", local_udp, "-p", port, *extra],
        keep=r"^([0-9]+, [0-9]+, |sctp_recvv)",
        env=_preload(silent, interleaving),
    )
    wait_listening(program, local_udp)
    return program


def tsctp_client(
    *,
    remote_udp: int,
    local_udp: int,
    port: int,
    length: int,
    messages: int | None = None,
    seconds: int | None = None,
    host: str = "127.0.0.1",
    extra: Iterable[object] = (),
    quiet: bool = False,
    silent: bool = False,
    interleaving: bool = False,
) -> Program:
    """tsctp sending ``messages`` messages (exactly that many) or for ``seconds`` seconds, then shutting down.

    ``quiet`` throws its output away instead of filtering it: the debug lines cost tsctp much less written to
    /dev/null than to a pipe, which matters when measuring it (then nothing it prints can be parsed).
    ``silent`` runs it without the debug logging at all (see ``silencer``).
    """
    args: list[object] = ["-E", local_udp, "-U", remote_udp, "-p", port, "-l", length]
    if seconds is not None:
        args += ["-T", seconds]
    if messages is not None:
        args += ["-n", messages]
    return Program(
        [path("tsctp"), *args, *extra, host],
        keep=r"^(Sending of|Throughput was)",
        quiet=quiet,
        env=_preload(silent, interleaving),
    )


@dataclass(frozen=True, slots=True)
class TsctpReceived:
    """One association as the tsctp server reported it."""

    length: int
    messages: int
    recv_calls: int
    bytes: int
    seconds: float
    notifications: int

    @property
    def mbit_per_s(self) -> float:
        return self.bytes * 8 / self.seconds / 1e6 if self.seconds > 0 else float("inf")


@dataclass(frozen=True, slots=True)
class TsctpSent:
    messages: int
    length: int
    seconds: float

    @property
    def bytes(self) -> int:
        return self.messages * self.length

    @property
    def mbit_per_s(self) -> float:
        return self.bytes * 8 / self.seconds / 1e6 if self.seconds > 0 else float("inf")


def parse_received(text: str) -> list[TsctpReceived]:
    return [
        TsctpReceived(int(m[1]), int(m[2]), int(m[3]), int(m[4]), float(m[5]), int(m[7]))
        for m in _TSCTP_RECEIVED.finditer(text)
    ]


def parse_sent(text: str) -> TsctpSent | None:
    m = _TSCTP_SENT.search(text)
    return TsctpSent(int(m[1]), int(m[2]), float(m[3])) if m else None


def receive_errors(server: Program) -> list[str]:
    """What the tsctp server's ``perror("sctp_recvv")`` printed: an association that ended by ABORT, not SHUTDOWN."""
    return [line for line in server.output().splitlines() if line.startswith("sctp_recvv")]


def wait_received(server: Program, count: int = 1, timeout: float = 30.0) -> list[TsctpReceived]:
    """The first ``count`` association reports of a tsctp server, waiting for them."""
    matches = server.wait_for(_TSCTP_RECEIVED, timeout, count)
    return [TsctpReceived(int(m[1]), int(m[2]), int(m[3]), int(m[4]), float(m[5]), int(m[7])) for m in matches]


class ShutdownAckAnswerer:
    """Stands in for the SCTP stack of a program that has exited, on its UDP port: answers every SHUTDOWN-ACK with a
    SHUTDOWN-COMPLETE with the T bit and the tag it carried (RFC 9260 §8.4 item 5), as a host's kernel stack would.

    A sender that closes gracefully sends the last packet of the close, SHUTDOWN-COMPLETE, and then (tsctp: within
    a second; peer.go after its ``-linger``, mux's client after ``mux.sctp.client.LINGER``) its process or socket is
    gone. If that packet is lost, the receiver retransmits its SHUTDOWN-ACK to nobody and its association ends only
    after its retransmission limit: a tsctp server prints its report only once the association is over.
    ``answered`` counts the SHUTDOWN-ACKs answered.
    Binds the port as soon as it is free (within ``wait`` seconds); use it as a context manager.
    """

    def __init__(self, udp_port: int, host: str = "127.0.0.1", wait: float = 3.0) -> None:
        self.answered = 0
        self._stop = threading.Event()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        deadline = time.monotonic() + wait
        while True:
            try:
                self._sock.bind((host, udp_port))
                break
            except OSError:
                if time.monotonic() > deadline:
                    self._sock.close()
                    raise
                time.sleep(0.01)
        self._sock.settimeout(0.05)
        self._thread = threading.Thread(target=self._run, name=f"shutdown-ack-answerer-{udp_port}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from mux.sctp.chunks import ShutdownCompleteChunk
        from mux.sctp.packet import serialize_packet

        while not self._stop.is_set():
            try:
                data, addr = self._sock.recvfrom(65536)
            except (TimeoutError, OSError):
                continue
            if len(data) >= 16 and data[12] == 8:  # SHUTDOWN-ACK
                src, dst, vtag = struct.unpack_from("!HHI", data)
                reply = serialize_packet(dst, src, vtag, [ShutdownCompleteChunk(t_bit=True)])
                with contextlib.suppress(OSError):
                    self._sock.sendto(reply, addr)
                    self.answered += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()

    def __enter__(self) -> ShutdownAckAnswerer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def running(*programs: Program) -> Iterator[tuple[Program, ...]]:
    """Stop (and forget the output of) the programs however the block ends."""
    try:
        yield programs
    finally:
        for program in programs:
            program.stop()
            program.remove_output()
