"""Pydantic building blocks shared by the server config and each transport's listener options."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class StrictModel(BaseModel):
    """Unknown keys are errors: a typo in a config file must never be silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class DriverOptions(StrictModel):
    """What every transport's UDP driver takes, listener or client."""

    #: After a batch of datagrams, keep the event loop polling (not sleeping) this long, as Linux's
    #: ``net.core.busy_poll``: a request that arrives within it is read without the wake-up from
    #: epoll, which costs tens of microseconds on a VM. Trades CPU for latency; 0 sleeps at once.
    busy_poll_us: int = Field(default=0, ge=0, le=100_000)


class ListenerBase(StrictModel):
    name: str | None = Field(default=None, description="defaults to '<transport>:<port>'")
    host: str = "127.0.0.1"
    port: int = Field(ge=0, le=65535)
    #: write the listener's datagrams, both ways, to this pcap file (``mux.pcap``); rotated to PATH.1 at the cap
    pcap: Path | None = None
    pcap_max_bytes: int = Field(default=64 << 20, ge=4096)
