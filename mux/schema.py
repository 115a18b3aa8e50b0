"""Pydantic building blocks shared by the server config and each transport's listener options."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class StrictModel(BaseModel):
    """Unknown keys are errors: a typo in a config file must never be silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ListenerBase(StrictModel):
    name: str | None = Field(default=None, description="defaults to '<transport>:<port>'")
    host: str = "127.0.0.1"
    port: int = Field(ge=0, le=65535)
