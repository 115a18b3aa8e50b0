"""The browser demo's behaviour (``conf/browser.yaml``): ``/chat`` is the chat, anything else the echo.

A server runs one behaviour class; this one picks, in ``new_conn``, which of two unchanged behaviours a connection
gets by its path (a WebTransport session's CONNECT path, or the path a WebRTC offer was POSTed to), and becomes
an instance of it: from then on the connection is an ``Echo`` or a ``Chat`` like any other, so chat members on
WebTransport and on data channels share the same rooms.
"""

from __future__ import annotations

from typing import Any

from mux import Connection, ConnectionBehaviour
from mux.behaviours.chat import Chat
from mux.behaviours.echo import Echo


class ByPath(ConnectionBehaviour):
    def init(self, opts: dict[str, Any]) -> None:
        self.opts = opts

    def new_conn(self, conn: Connection, props: dict[str, Any]) -> None:
        path = str(props.get("path") or "/").split("?")[0]
        chosen: type[ConnectionBehaviour] = Chat if path.rstrip("/").endswith("/chat") else Echo
        opts = self.opts
        self.__class__ = chosen  # type: ignore[assignment]  # from now on the connection is that class, unchanged
        self.init(opts)
