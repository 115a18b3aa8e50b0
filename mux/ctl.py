"""The ``mux ctl`` command: talk to a running server's control socket (``control: {socket: PATH}``)."""

from __future__ import annotations

import argparse
import json
import socket
import sys
from typing import Any

DESCRIPTION = """\
Verbs (ranch's names):
  info                      the pool's state, limits and counts per listener, with addresses
  connections               every connection: id, listener, transport, peer, state, age, traffic
  suspend [LISTENER]        stop admitting peers (on one listener, or all); connections carry on
  resume [LISTENER]         admit peers again
  drain                     stop admitting, let connections finish (shutdown_timeout_ms), stop the server
  close CONN_ID             close one connection (the peer gets code 0, "closed by the operator")
  set max_connections N     change the pool's limit now (until the next reload or restart)
  reload                    read the YAML file again, as SIGHUP does

Exit status: 0 done, 1 the server said no (the reason is printed), 2 no server or bad usage."""

TIMEOUT_S = 30.0


class CtlError(Exception):
    pass


def request(path: str, verb: str, args: dict[str, Any] | None = None, timeout: float = TIMEOUT_S) -> dict[str, Any]:
    """Send one verb over the control socket and return the server's answer (``ok``, ``result`` or ``error``)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(json.dumps({"verb": verb, "args": args or {}}).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    if not data:
        raise CtlError("the server closed the control socket without answering")
    answer = json.loads(data)
    if not isinstance(answer, dict):
        raise CtlError("the server's answer is not a JSON object")
    return answer


def parse_verb(verb: str, rest: list[str]) -> dict[str, Any]:
    """The verb's arguments as the server takes them; raises CtlError on bad usage."""

    def expect(count: int, usage: str) -> None:
        if len(rest) != count:
            raise CtlError(f"usage: mux ctl PATH {usage}")

    if verb in ("info", "connections", "drain", "reload"):
        expect(0, verb)
        return {}
    if verb in ("suspend", "resume"):
        if len(rest) > 1:
            raise CtlError(f"usage: mux ctl PATH {verb} [LISTENER]")
        return {"listener": rest[0]} if rest else {}
    if verb == "close":
        expect(1, "close CONN_ID")
        try:
            return {"id": int(rest[0])}
        except ValueError:
            raise CtlError(f"close: expected a connection id (a number), got {rest[0]!r}") from None
    if verb == "set":
        expect(2, "set max_connections N")
        try:
            return {"key": rest[0], "value": int(rest[1])}
        except ValueError:
            raise CtlError(f"set {rest[0]}: expected a whole number, got {rest[1]!r}") from None
    raise CtlError(f"unknown verb {verb!r}; see mux ctl --help")


def table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [[("-" if v is None else str(v)) for v in row] for row in rows]
    widths = [max(len(h), *(len(row[i]) for row in cells)) if cells else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in cells:
        lines.append("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def render(verb: str, result: dict[str, Any]) -> str:
    """What a person reads for each verb's answer."""
    if verb == "info":
        head = (
            f"pid {result.get('pid')}  state {result['state']}  max_connections {result['max_connections']}  "
            f"num_acceptors {result['num_acceptors']}  reloads {result.get('reloads', 0)}  "
            f"config {result.get('config')}"
        )
        if result.get("metrics"):
            head += f"\nmetrics {result['metrics']}"
        rows = []
        for name, entry in result["listeners"].items():
            rows.append(
                [
                    name,
                    entry.get("transport"),
                    entry.get("address"),
                    entry.get("state", "running"),
                    entry.get("active"),
                    entry.get("handshaking"),
                    entry.get("accepted"),
                    entry.get("refused"),
                    entry.get("closed"),
                ]
            )
        total = result["total"]
        rows.append(
            [
                "total",
                "",
                "",
                result["state"],
                total["active"],
                total["handshaking"],
                total["accepted"],
                total["refused"],
                total["closed"],
            ]
        )
        headers = [
            "listener",
            "transport",
            "address",
            "state",
            "active",
            "handshaking",
            "accepted",
            "refused",
            "closed",
        ]
        return head + "\n" + table(headers, rows)
    if verb == "connections":
        keys = [
            "id",
            "listener",
            "transport",
            "peer",
            "state",
            "age_s",
            "bytes_in",
            "bytes_out",
            "packets_in",
            "packets_out",
            "retransmitted",
            "srtt_ms",
        ]
        rows = [[conn.get(k) for k in keys] for conn in result["connections"]]
        return table(keys, rows) + f"\n{len(rows)} connection(s)"
    if verb in ("suspend", "resume"):
        return f"{result.get('listener') or 'all listeners'}: {result['state']}"
    if verb == "drain":
        return f"draining: {result['connections']} connection(s) open"
    if verb == "close":
        return f"connection {result['id']}: {result['state']}"
    if verb == "set":
        return f"max_connections {result['max_connections']} (was {result['was']})"
    if verb == "reload":
        parts = [f"reloaded: behaviour {result['behaviour']}"]
        for key in ("added", "removed", "updated"):
            parts.append(f"{key} {', '.join(result[key]) or 'none'}")
        return "; ".join(parts)
    return json.dumps(result, indent=2)


def run(args: argparse.Namespace) -> int:
    try:
        params = parse_verb(args.verb, args.args)
    except CtlError as exc:
        print(f"mux ctl: {exc}", file=sys.stderr)
        return 2
    try:
        answer = request(args.path, args.verb, params, timeout=args.timeout)
    except (OSError, CtlError, ValueError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        print(f"mux ctl: {args.path}: {why}", file=sys.stderr)
        return 2
    if not answer.get("ok"):
        print(f"mux ctl: {args.verb}: {answer.get('error')}", file=sys.stderr)
        return 1
    result = answer.get("result") or {}
    print(json.dumps(result, indent=2, default=str) if args.json else render(args.verb, result))
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``ctl`` to the ``mux`` command."""
    parser = subparsers.add_parser(
        "ctl",
        help="control a running server over its control socket",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("path", metavar="PATH", help="the control socket (control.socket in the YAML file)")
    parser.add_argument("verb", metavar="VERB", help="info, connections, suspend, resume, drain, close, set, reload")
    parser.add_argument("args", nargs="*", metavar="ARG")
    parser.add_argument("--json", action="store_true", help="print the answer as JSON")
    parser.add_argument("--timeout", type=float, default=TIMEOUT_S, help="seconds to wait for the answer")
    parser.set_defaults(func=run)
