"""The ``mux`` command: serve, check, client (and the tools other modules register)."""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import os
import re
import sys
from typing import Any

import yaml

from mux import config as cfg
from mux import logs, preflight, quick, scaffold, workers
from mux.loop import run as run_loop

log = logging.getLogger("mux.cli")


def use_app_dir(directory: str) -> None:
    """Make the user's modules importable, as uvicorn does: ``behaviour: mymodule:Class`` from where they work.

    ``python -m`` puts the working directory on ``sys.path``; the ``mux`` script does not, so without this a module
    next to the YAML file needed ``PYTHONPATH=.``. First on the path, so a module of the user's wins over an
    installed one of the same name.
    """
    path = os.path.abspath(directory)
    if path in sys.path:
        sys.path.remove(path)
    sys.path.insert(0, path)


#: the flags that describe listeners when ``mux serve`` is given a behaviour instead of a YAML file
LISTENER_FLAGS = ("quic", "sctp", "alpn", "certfile", "keyfile", "sctp_port", "option")


def is_yaml_target(target: str) -> bool:
    """A YAML file unless it reads ``module:Class`` and is no file: ``conf.yaml`` and ``./x`` stay files."""
    return target.endswith((".yaml", ".yml")) or os.path.isfile(target) or ":" not in target


def load_target(args: argparse.Namespace) -> Any:
    """The checked config of ``mux serve``/``mux check``: from the YAML file, or from a behaviour and the flags."""
    given = [f"--{flag.replace('_', '-')}" for flag in LISTENER_FLAGS if getattr(args, flag) not in (None, [])]
    if is_yaml_target(args.config):
        if given:
            raise cfg.ConfigError(
                f"{args.config}: {given[0]}: the listener flags are for serving a behaviour (module:Class) "
                "without a YAML file; set it in the file"
            )
        return preflight.load(args.config)  # everything that can fail before a socket is bound
    options: dict[str, Any] = {}
    for item in args.option:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise cfg.ConfigError(f"--option: expected KEY=VALUE, got {item!r}")
        try:
            options[key] = yaml.safe_load(value)
        except yaml.YAMLError:
            options[key] = value
    return quick.build_config(
        args.config,
        f"mux {args.command}",
        quic=args.quic,
        sctp=args.sctp,
        alpn=args.alpn,
        certfile=args.certfile,
        keyfile=args.keyfile,
        sctp_port=args.sctp_port,
        options=options,
        flag="--",
    )


def cmd_check(args: argparse.Namespace) -> int:
    use_app_dir(args.app_dir)
    try:
        config = load_target(args)
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
    use_app_dir(args.app_dir)
    try:
        config = load_target(args)
    except cfg.ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    logs.setup(args.log_level or config.logging.level, args.log_format or config.logging.format)

    async def main(config: Any) -> int:
        from mux.server import Server, StartError

        # a reload (SIGHUP) reads the YAML file again; a behaviour served from flags has none
        server = Server(config, source=args.config if is_yaml_target(args.config) else None)
        try:
            await server.serve_forever()
        except StartError as exc:
            log.error("cannot start: %s", exc)
            log.debug("cannot start", exc_info=exc.__cause__)
            return 1
        return 0

    count = workers.resolve_count(args.workers or config.workers)
    if count > 1:
        return workers.serve(config, count, lambda config: run_loop(main(config)))
    return run_loop(main(config))


def cmd_client(args: argparse.Namespace) -> int:
    logs.setup(args.log_level or "warning", args.log_format or "text")
    from mux.clientcli import run_client

    return run_loop(run_client(args))


def _version() -> str:
    """The installed distribution's version (what pip sees), else the package's own."""
    try:
        return importlib.metadata.version("mux")
    except importlib.metadata.PackageNotFoundError:
        import mux

        return mux.__version__


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected more than 0 seconds, got {text!r}")
    return value


def _workers_flag(text: str) -> int | str:
    if text == "auto":
        return text
    if text.isdigit() and 1 <= int(text) <= cfg.MAX_WORKERS:
        return int(text)
    raise argparse.ArgumentTypeError(f"expected a number of processes from 1 to {cfg.MAX_WORKERS}, or 'auto'")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mux", description="One connection behaviour over QUIC and SCTP.")
    parser.add_argument("--version", action="version", version=f"mux {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    scaffold.register(sub)

    def logging_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="overrides the config")
        p.add_argument("--log-format", choices=["text", "json"], help="overrides the config")

    def app_dir_flag(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--app-dir",
            default=".",
            metavar="DIR",
            help="import the behaviour's module from DIR, first on sys.path (default: the working directory)",
        )

    def target(p: argparse.ArgumentParser) -> None:
        p.add_argument("config", metavar="CONFIG.yaml | module:Class", help="a YAML file, or a behaviour to serve")
        app_dir_flag(p)
        flags = p.add_argument_group("without a YAML file", "listeners for a behaviour given as module:Class")
        flags.add_argument("--quic", action="append", default=[], metavar="HOST:PORT", help="a QUIC listener")
        flags.add_argument("--sctp", action="append", default=[], metavar="HOST:PORT", help="an SCTP-over-UDP listener")
        flags.add_argument("--alpn", action="append", default=[], help="QUIC ALPN (comma-separated; required)")
        flags.add_argument("--certfile", help="QUIC certificate (default: a self-signed one, made and cached)")
        flags.add_argument("--keyfile", help="QUIC private key")
        flags.add_argument("--sctp-port", type=int, help="the SCTP port inside UDP (default 7)")
        flags.add_argument(
            "--option", action="append", default=[], metavar="KEY=VALUE", help="to the behaviour's init (YAML value)"
        )

    p = sub.add_parser("serve", help="run a server from a YAML file, or a behaviour with --quic/--sctp")
    target(p)
    p.add_argument(
        "--workers", type=_workers_flag, help="worker processes, or 'auto' for one per core (overrides the config)"
    )
    logging_flags(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("check", help="validate a YAML file (or serve's flags) and exit (non-zero on error)")
    target(p)
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
    p.add_argument(
        "--timeout", type=_positive, default=5.0, help="seconds to wait for the handshake before giving up (default 5)"
    )
    logging_flags(p)
    p.set_defaults(func=cmd_client)

    for module in ("mux.impair.cli", "mux.bench.cli", "mux.ctl"):
        try:
            register = __import__(module, fromlist=["register"]).register
        except ModuleNotFoundError as exc:
            if exc.name is None or exc.name.split(".")[0] == "mux":
                raise
            _register_missing(sub, module, exc.name)
            continue
        register(sub)
    return parser


def _register_missing(sub: argparse._SubParsersAction[argparse.ArgumentParser], module: str, missing: str) -> None:
    """A command whose optional dependency is not installed still parses, and says what to install."""
    name = module.split(".")[1]
    hint = f"pip install {missing}"
    try:
        for requirement in importlib.metadata.requires("mux") or []:
            found = re.match(r"([A-Za-z0-9_.-]+).*extra\s*==\s*['\"]([^'\"]+)['\"]", requirement)
            if found and found[1].lower().replace("_", "-") == missing.lower().replace("_", "-"):
                hint = f"pip install 'mux[{found[2]}]'"
                break
    except importlib.metadata.PackageNotFoundError:
        pass
    message = f"mux {name}: needs the {missing!r} package, which is not installed: {hint}"

    def unavailable(args: argparse.Namespace) -> int:
        print(message, file=sys.stderr)
        return 2

    p = sub.add_parser(name, help=f"(not installed: {hint})", add_help=False)
    p.add_argument("args", nargs=argparse.REMAINDER)
    p.set_defaults(func=unavailable)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
