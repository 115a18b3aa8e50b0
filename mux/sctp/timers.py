"""An association's timers (T1, T2, T3-rtx, T5, SACK delay, heartbeat, autoclose, RE-CONFIG, RACK's loss timer,
PLPMTUD's probes and the other paths' heartbeats): the earliest deadline, and what each does when it fires."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mux.sctp import events as ev
from mux.sctp.chunks import AbortChunk
from mux.sctp.packet import serialize_packet
from mux.sctp.state import DATA_FLOWS, ESTABLISHED

if TYPE_CHECKING:
    from mux.sctp.association import Association


def next_timer(a: Association) -> float | None:
    """The earliest deadline of any of the association's timers (the driver's ``get_timer``)."""
    at: float | None = None
    for t in (
        a._t3,
        a._t_sack,
        a._t1,
        a._t2,
        a._t_hb,
        a._t5,
        a._t_autoclose,
        a._t_reconf,
        a._t_loss,
    ):
        if t is not None and (at is None or t < at):
            at = t
    if a._pmtud is not None:
        t = a._pmtud.next_timer()
        if t is not None and (at is None or t < at):
            at = t
    if len(a._paths.by_index) > 1 and a.state in DATA_FLOWS and not a._on_hold:
        t = a._paths.next_timer()
        if t is not None and (at is None or t < at):
            at = t
    return at


def handle_timer(a: Association, now: float) -> None:
    """Run every timer due at ``now``."""
    if a._t_sack is not None and now >= a._t_sack:
        a._t_sack = None
        a._need_sack = True
    if a._t3 is not None and now >= a._t3:
        a._t3 = None
        a._retx.on_t3(now)
    if a._t1 is not None and now >= a._t1:
        a._t1 = None
        a._handshake.on_t1(now)
    if a._t2 is not None and now >= a._t2:
        a._t2 = None
        a._shutdown.on_t2(now)
    if a._t5 is not None and now >= a._t5:
        a._finish(ev.AssociationAborted("shutdown guard timer expired"))
        a._raw.append(serialize_packet(a.local_port, a.remote_port, a.peer_vtag, [AbortChunk()]))
    if a._t_hb is not None and now >= a._t_hb:
        a._heartbeat.on_timer(now)
    if a._t_autoclose is not None and now >= a._t_autoclose:
        _on_autoclose(a, now)
    if a._t_reconf is not None and now >= a._t_reconf:
        a._streams.on_timer(now)
    if a._t_loss is not None and now >= a._t_loss:
        a._t_loss = None
        a._retx.on_loss_timer(now)
    if a._pmtud is not None:
        t = a._pmtud.next_timer()
        if t is not None and now >= t:
            a._pmtud.on_timer(now)
    if len(a._paths.by_index) > 1 and a.state in DATA_FLOWS and not a._on_hold:
        t = a._paths.next_timer()
        if t is not None and now >= t:
            a._paths.on_timer(now, a._to_paths)


def _on_autoclose(a: Association, now: float) -> None:
    """gen_sctp's autoclose: an association idle for ``autoclose`` seconds shuts down gracefully."""
    a._t_autoclose = None
    if a.state != ESTABLISHED:
        return
    due = a._last_data + a.config.autoclose
    if now >= due and not a._queue and not len(a._out):
        a.shutdown(now)
    else:
        a._t_autoclose = max(due, now + 0.001)
