"""The ``mux`` command: serve, check, client (and the tools other modules register)."""

from __future__ import annotations

import argparse
import logging
import sys

from mux import config as cfg
from mux import logs, preflight
from mux.loop import run as run_loop

log = logging.getLogger("mux.cli")


def cmd_check(args: argparse.Namespace) -> int:
    try:
        config = preflight.load(args.config)
    except cfg.ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    names = ", ".join(
        f"{cfg.listener_name(lst)} ({lst.transport} {preflight.host_port(lst.host, lst.port)})"
        for lst in config.listeners
    )
    print(f"{args.config}: ok: behaviour {config.behaviour}; listeners: {names}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        config = preflight.load(args.config)  # everything that can fail before a socket is bound
    except cfg.ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    logs.setup(args.log_level or config.logging.level, args.log_format or config.logging.format)

    async def main() -> int:
        from mux.server import Server, StartError

        server = Server(config)
        try:
            await server.serve_forever()
        except StartError as exc:
            log.error("cannot start: %s", exc)
            log.debug("cannot start", exc_info=exc.__cause__)
            return 1
        return 0

    return run_loop(main())


def cmd_client(args: argparse.Namespace) -> int:
    logs.setup(args.log_level or "warning", args.log_format or "text")
    from mux.clientcli import run_client

    return run_loop(run_client(args))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mux", description="One connection behaviour over QUIC and SCTP.")
    sub = parser.add_subparsers(dest="command", required=True)

    def logging_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="overrides the config")
        p.add_argument("--log-format", choices=["text", "json"], help="overrides the config")

    p = sub.add_parser("serve", help="run a server from a YAML file")
    p.add_argument("config")
    logging_flags(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("check", help="validate a YAML file and exit (non-zero on error)")
    p.add_argument("config")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser(
        "client",
        help="send stdin lines on a stream and print the replies",
        description="Like usrsctp's client program: each stdin line goes out on one stream "
        "(one message per line over SCTP); replies are printed as they arrive. EOF ends it.",
    )
    p.add_argument(
        "url",
        help="quic://HOST:PORT, sctp://HOST:UDP_PORT or sctp://HOST?encapsulation=none (query: transport options)",
    )
    p.add_argument("--alpn", default=None, help="QUIC ALPN, comma-separated (default: echo)")
    p.add_argument("--insecure", action="store_true", help="QUIC: do not verify the server certificate")
    p.add_argument("--cacertfile", default=None, help="QUIC: CA file to verify the server with")
    p.add_argument("--sctp-port", type=int, default=None, help="SCTP: the server's SCTP port (default 7)")
    p.add_argument(
        "--encapsulation",
        choices=["udp", "none"],
        default=None,
        help="SCTP: in UDP (default) or none, directly on IP (needs root; the URL then has no port)",
    )
    p.add_argument("--datagram", action="store_true", help="send each line as a datagram instead")
    p.add_argument("--wait", type=float, default=2.0, help="seconds to wait for replies after EOF")
    logging_flags(p)
    p.set_defaults(func=cmd_client)

    for module in ("mux.impair.cli", "mux.bench.cli"):
        try:
            register = __import__(module, fromlist=["register"]).register
        except ImportError:
            continue
        register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
