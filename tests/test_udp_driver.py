"""The asyncio UDP driver's timer handling, on uvloop (libuv timers have millisecond resolution)."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from mux.udp import FAR, WHEEL_GRAIN, Address, Driver, Pumped

uvloop = pytest.importorskip("uvloop")


class PacedCore:
    """A core that wants to send one packet every 200 us: a pacer like aioquic's at high rates."""

    def __init__(self, start: float, packets: int) -> None:
        self.next_at = start
        self.left = packets
        self.handled: list[tuple[float, float]] = []  # (deadline, now) per handle_timer call

    def get_timer(self) -> float | None:
        return self.next_at if self.left else None

    def handle_timer(self, now: float) -> None:
        self.handled.append((self.next_at, now))

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        if self.left and now >= self.next_at:
            self.left -= 1
            self.next_at += 0.0002
            return [(b"x", ("127.0.0.1", 9))]
        return []

    def next_event(self) -> Any:
        return None


class IgnoringDemux:
    def datagram_received(self, data: bytes, addr: Address, now: float) -> None: ...

    def flush_stateless(self, driver: Driver) -> None: ...


class Conn(Pumped):
    """A connection as the driver sees it, in its simplest form (``Pumped`` itself has no instance dict)."""


class OneDeadline:
    """A core with one deadline; ``handle_timer`` records when it ran and clears it."""

    def __init__(self, at: float | None) -> None:
        self.at = at
        self.fired: list[float] = []

    def get_timer(self) -> float | None:
        return self.at

    def handle_timer(self, now: float) -> None:
        self.fired.append(now)
        self.at = None

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        return []

    def next_event(self) -> Any:
        return None


def loopback_driver(busy_poll_us: int = 0) -> Driver:
    """A driver on a fresh 127.0.0.1 socket whose demux drops what it reads."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    return Driver(sock, IgnoringDemux(), asyncio.get_running_loop(), busy_poll_us=busy_poll_us)


def test_a_sub_millisecond_timer_is_served_not_spun() -> None:
    sent = []

    async def main() -> PacedCore:
        loop = asyncio.get_running_loop()
        driver = loopback_driver()
        driver.sendto = lambda data, addr: sent.append(data)  # type: ignore[method-assign]
        core = PacedCore(loop.time() + 0.0003, packets=50)
        pumped = Conn()
        pumped.core = core
        driver._arm(pumped, core.get_timer())
        deadline = loop.time() + 2.0
        while core.left and loop.time() < deadline:
            await asyncio.sleep(0.005)
        driver.close()
        return core

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        core = runner.run(main())
    assert len(sent) == 50, f"only {len(sent)} of 50 paced packets left within 2 s"
    # every handle_timer call found its deadline reached: none wasted on an early fire
    early = [(at, now) for at, now in core.handled if now < at]
    assert early == [], early[:5]
    assert len(core.handled) <= 50


def test_busy_poll_keeps_the_loop_awake_for_its_window_then_sleeps() -> None:
    """busy_poll_us: after a datagram the loop keeps stepping (each step a zero-timeout poll) for the
    window, and then stops spinning."""

    async def main() -> tuple[bool, int, bool]:
        driver = loopback_driver(busy_poll_us=20_000)
        steps = 0
        stay_awake = driver._stay_awake

        def counted() -> None:
            nonlocal steps
            steps += 1
            stay_awake()

        driver._stay_awake = counted  # type: ignore[method-assign]
        peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        peer.sendto(b"a", driver.local_address)
        await asyncio.sleep(0.005)
        polling_in_window = driver._polling
        await asyncio.sleep(0.05)  # well past the 20 ms window
        still_polling = driver._polling
        driver.close()
        peer.close()
        return polling_in_window, steps, still_polling

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        polling_in_window, steps, still_polling = runner.run(main())
    assert polling_in_window, "not polling right after a datagram"
    assert steps > 100, f"only {steps} loop steps in a 20 ms busy-poll window"
    assert not still_polling, "the driver kept spinning after its busy_poll window"


def test_busy_poll_is_a_listener_and_client_option() -> None:
    from pydantic import ValidationError

    from mux.quic.options import QuicClientOptions, QuicListenerOptions
    from mux.sctp.options import SctpClientOptions, SctpListenerOptions

    assert QuicListenerOptions(alpn=["echo"], busy_poll_us=250).busy_poll_us == 250
    assert SctpListenerOptions(busy_poll_us=250).busy_poll_us == 250
    assert QuicClientOptions().busy_poll_us == 0 and SctpClientOptions().busy_poll_us == 0
    with pytest.raises(ValidationError):
        QuicListenerOptions(alpn=["echo"], busy_poll_us=-1)


def test_far_deadlines_wait_in_the_wheel_and_fire_on_time_or_a_grain_late() -> None:
    """A deadline further off than FAR takes no loop timer of its own: it waits in the driver's wheel, fires at or
    after its time (never early), at most a grain (plus the loop's own lateness) late; one disarmed or finished in
    the meantime does not fire, and the wheel forgets it."""

    async def main() -> tuple[list[float], float, list[float], list[float], int]:
        loop = asyncio.get_running_loop()
        driver = loopback_driver()
        at = loop.time() + FAR + 0.2
        cores = [OneDeadline(at), OneDeadline(at + 0.01), OneDeadline(at + 0.02)]
        conns = []
        for core in cores:
            conn = Conn()
            conn.core = core
            driver._arm(conn, core.get_timer())
            assert conn._timer is None and conn._slot is not None  # in the wheel, not a loop timer
            conns.append(conn)
        cores[1].at = None
        driver._arm(conns[1], None)  # disarmed
        conns[2].finished = True
        driver._pump(conns[2], loop.time())  # finished: the driver forgets it
        await asyncio.sleep(FAR + 0.2 + 3 * WHEEL_GRAIN)
        left = sum(len(waiting) for waiting in driver._wheel.values())
        driver.close()
        return cores[0].fired, at, cores[1].fired, cores[2].fired, left

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        fired, at, disarmed, finished, left = runner.run(main())
    assert len(fired) == 1 and at <= fired[0] <= at + WHEEL_GRAIN + 0.1, (fired, at)
    assert disarmed == [] and finished == []
    assert left == 0


def test_a_near_deadline_moved_before_a_far_one_fires_once_at_its_time() -> None:
    """A connection in the wheel whose deadline comes nearer leaves it for a loop timer: it fires once, on time."""

    async def main() -> tuple[list[float], float, int]:
        loop = asyncio.get_running_loop()
        driver = loopback_driver()
        core = OneDeadline(loop.time() + FAR + 1.0)
        conn = Conn()
        conn.core = core
        driver._arm(conn, core.get_timer())
        near = core.at = loop.time() + 0.05
        driver._arm(conn, near)
        assert conn._slot is None and conn._timer is not None
        await asyncio.sleep(FAR + 1.2)
        left = sum(len(waiting) for waiting in driver._wheel.values())
        driver.close()
        return core.fired, near, left

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        fired, near, left = runner.run(main())
    assert len(fired) == 1 and near <= fired[0] < near + 0.1, (fired, near)
    assert left == 0


class FailingDeadline(OneDeadline):
    def handle_timer(self, now: float) -> None:
        super().handle_timer(now)
        raise RuntimeError("this connection's timer fails")


def test_a_failing_timer_in_the_wheel_does_not_cost_the_others_in_its_slot_theirs() -> None:
    async def main() -> tuple[list[OneDeadline], list[dict[str, Any]]]:
        loop = asyncio.get_running_loop()
        reported: list[dict[str, Any]] = []
        loop.set_exception_handler(lambda _loop, context: reported.append(context))
        driver = loopback_driver()
        at = loop.time() + FAR + 0.2
        cores: list[OneDeadline] = [FailingDeadline(at), OneDeadline(at), FailingDeadline(at), OneDeadline(at)]
        for core in cores:  # one slot for all four
            conn = Conn()
            conn.core = core
            driver._arm(conn, core.get_timer())
        await asyncio.sleep(FAR + 0.2 + 3 * WHEEL_GRAIN)
        driver.close()
        return cores, reported

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        cores, reported = runner.run(main())
    assert [len(core.fired) for core in cores] == [1, 1, 1, 1]
    assert len(reported) == 2 and all(isinstance(c["exception"], RuntimeError) for c in reported)


def run_uvloop(main: Any) -> Any:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main())


def test_a_deadline_moved_earlier_fires_at_the_new_one() -> None:
    """The driver keeps its timer handle while a deadline moves later; one that moves earlier re-arms it."""

    async def main() -> tuple[OneDeadline, float]:
        loop = asyncio.get_running_loop()
        driver = loopback_driver()
        core = OneDeadline(loop.time() + FAR / 2)  # near enough for a loop timer of its own (not the wheel)
        pumped = Conn()
        pumped.core = core
        driver._arm(pumped, core.get_timer())
        armed = pumped._timer
        core.at = loop.time() + 0.02  # e.g. an ACK became due
        driver._pump(pumped, loop.time())
        assert pumped._timer is not armed and armed is not None and armed.cancelled()
        moved_to = core.at
        deadline = loop.time() + 5.0
        while not core.fired and loop.time() < deadline:
            await asyncio.sleep(0.005)
        driver.close()
        return core, moved_to

    core, moved_to = run_uvloop(main)
    assert core.fired, "a deadline moved earlier did not fire within 5 s"
    assert core.fired[0] >= moved_to  # served at (or after) the new deadline, never before it


def test_a_deadline_moved_later_keeps_the_handle_and_is_not_served_early() -> None:
    async def main() -> tuple[OneDeadline, float, bool]:
        loop = asyncio.get_running_loop()
        driver = loopback_driver()
        core = OneDeadline(loop.time() + 0.01)
        pumped = Conn()
        pumped.core = core
        driver._arm(pumped, core.get_timer())
        armed = pumped._timer
        core.at = loop.time() + 0.06  # the deadline moved later: no cancel and call_at for that
        driver._pump(pumped, loop.time())
        kept = pumped._timer is armed
        later = core.at
        deadline = loop.time() + 5.0
        while not core.fired and loop.time() < deadline:
            await asyncio.sleep(0.005)
        driver.close()
        return core, later, kept

    core, later, kept = run_uvloop(main)
    assert kept, "the timer handle was replaced for a deadline that moved later"
    assert core.fired, "the later deadline was never served"
    assert core.fired[0] >= later, "handle_timer ran before the (later) deadline"
    assert len(core.fired) == 1
