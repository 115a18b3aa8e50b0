"""Config errors: one message naming the file, the key path and what was expected."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mux import config as cfg

GOOD = """\
behaviour: behaviours.echo:Echo
listeners:
  - {transport: quic, port: 4433, alpn: [echo]}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "server.yaml"
    path.write_text(text)
    return path


def error_of(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(cfg.ConfigError) as info:
        cfg.load(path)
    message = str(info.value)
    assert message.startswith(str(path)), message
    return message


def test_good_file_and_defaults(tmp_path: Path) -> None:
    config = cfg.load(write(tmp_path, GOOD))
    assert config.pool.max_connections == 10_000
    (lst,) = config.listeners
    assert (lst.transport, lst.port, lst.alpn, lst.idle_timeout_ms) == ("quic", 4433, ["echo"], 30_000)
    assert cfg.listener_name(lst) == "quic:4433"


def test_shipped_configs_are_valid() -> None:
    for path in Path("conf").glob("*.yaml"):
        if path.name != "ab.yaml":
            cfg.load(path)


@pytest.mark.parametrize(
    ("text", "path", "expected"),
    [
        (GOOD + "pool: {max_conections: 5}\n", "pool.max_conections", "unknown key"),
        (
            GOOD.replace("port: 4433", "port: 4433, idle_timeout_ms: soon"),
            "listeners[0].idle_timeout_ms",
            "valid integer",
        ),
        (GOOD.replace(", alpn: [echo]", ""), "listeners[0].alpn", "required key is missing"),
        (GOOD.replace("transport: quic", "transport: tcp"), "listeners[0]", "one of: quic, sctp"),
        (GOOD.replace("port: 4433", "port: 70000"), "listeners[0].port", "less than or equal to 65535"),
        (GOOD + "pool: {num_acceptors: 0}\n", "pool.num_acceptors", "greater than 0"),
        (GOOD.replace("alpn: [echo]", "alpn: [echo], verify: maybe"), "listeners[0].verify", "'none'"),
        ("listeners: []\n", "behaviour", "required key is missing"),
        (GOOD.replace("behaviours.echo:Echo", "behaviours.nope:Echo"), "behaviour", "cannot import module"),
        (GOOD.replace("behaviours.echo:Echo", "behaviours.echo:Nope"), "behaviour", "has no attribute"),
        (GOOD.replace("behaviours.echo:Echo", "mux.pool:AcceptorPool"), "behaviour", "not a subclass"),
    ],
)
def test_errors_name_file_key_and_expectation(tmp_path: Path, text: str, path: str, expected: str) -> None:
    message = error_of(tmp_path, text)
    assert f": {path}" in message, message
    assert expected in message, message
    assert "Traceback" not in message


def test_yaml_syntax_error_has_line(tmp_path: Path) -> None:
    message = error_of(tmp_path, "behaviour: [unclosed\n")
    assert "invalid YAML" in message and ":2:" in message


def test_missing_file() -> None:
    with pytest.raises(cfg.ConfigError, match=r"nowhere\.yaml: cannot read"):
        cfg.load("nowhere.yaml")


def test_duplicate_listener_names(tmp_path: Path) -> None:
    text = GOOD + "  - {transport: quic, port: 4433, alpn: [echo]}\n"
    assert "duplicate listener name 'quic:4433'" in error_of(tmp_path, text)


def test_mux_check_cli(tmp_path: Path) -> None:
    good = subprocess.run(
        [sys.executable, "-m", "mux.cli", "check", str(write(tmp_path, GOOD))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert good.returncode == 0 and "ok" in good.stdout
    bad = write(tmp_path, GOOD + "pool: {max_conections: 5}\n")
    result = subprocess.run(
        [sys.executable, "-m", "mux.cli", "check", str(bad)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert result.stderr.strip() == f"{bad}: pool.max_conections: unknown key"
