"""``mux init [DIR]``: a server YAML and a behaviour to start from, so that an installed mux needs no checkout."""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from pathlib import Path

#: what ``mux init`` writes, from ``mux/templates`` (package data)
FILES = ("server.yaml", "hello.py")


def write(directory: Path) -> list[Path]:
    """Write the files into ``directory`` (made if missing); raises FileExistsError and writes nothing if one is
    there already."""
    targets = [directory / name for name in FILES]
    existing = [str(path) for path in targets if path.exists()]
    if existing:
        raise FileExistsError(", ".join(existing))
    directory.mkdir(parents=True, exist_ok=True)
    templates = resources.files("mux") / "templates"
    for name, path in zip(FILES, targets, strict=True):
        path.write_bytes((templates / name).read_bytes())
    return targets


def cmd_init(args: argparse.Namespace) -> int:
    directory = Path(args.directory)
    try:
        written = write(directory)
    except FileExistsError as exc:
        print(f"mux init: not overwriting {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"mux init: cannot write in {directory}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    where = "" if directory == Path(".") else f"cd {directory} && "
    print(f"wrote {', '.join(str(path) for path in written)}")
    print(f"next: {where}mux serve server.yaml")
    print("then, from another terminal: mux client quic://127.0.0.1:4433 --alpn hello --insecure")
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "init",
        help="write server.yaml and a behaviour (hello.py) to start from",
        description="Writes DIR/server.yaml and DIR/hello.py (a behaviour over QUIC and SCTP); never overwrites.",
    )
    p.add_argument("directory", nargs="?", default=".", metavar="DIR", help="where (default: here; made if missing)")
    p.set_defaults(func=cmd_init)
