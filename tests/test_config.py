"""Config errors: one message naming the file, the key path and what was expected."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mux import config as cfg
from mux import preflight
from mux.quic.certs import ec_certificate, write_pem

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


@pytest.mark.parametrize("scheduler", ["rr", "fcfs", "prio", "wfq"])
def test_sctp_scheduler_option_reaches_the_core(tmp_path: Path, scheduler: str) -> None:
    from mux.sctp.options import core_config

    sctp = f"transport: sctp, port: 0, scheduler: {scheduler}"
    text = GOOD.replace("transport: quic, port: 4433, alpn: [echo]", sctp)
    (lst,) = cfg.load(write(tmp_path, text)).listeners
    assert core_config(lst).scheduler == scheduler  # type: ignore[arg-type]  # an SCTP listener's options


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
        (
            GOOD.replace("transport: quic, port: 4433, alpn: [echo]", "transport: sctp, port: 0, scheduler: lifo"),
            "listeners[0].scheduler",
            "'rr', 'fcfs', 'prio' or 'wfq'",
        ),
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


# -- issue 9: no traceback for any bad config; `mux check` finds what `mux serve` would reject ------------------

SERVER = "behaviour: behaviours.echo:Echo\nlisteners:\n"


def run_mux(*args: str, cwd: Path, path: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``python -m mux.cli ARGS`` in ``cwd``; ``path`` joins PYTHONPATH (a behaviour module written by the test)."""
    env = dict(os.environ)
    if path is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH"), str(path)) if p)
    return subprocess.run(
        [sys.executable, "-m", "mux.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def make_cert(directory: Path, stem: str = "server") -> tuple[Path, Path]:
    """A self-signed EC certificate and its PKCS#8 key, as PEM files."""
    cert, key = ec_certificate("localhost", 1)
    certfile, keyfile = directory / f"{stem}.pem", directory / f"{stem}.key"
    write_pem(cert, key, certfile, keyfile)
    return certfile, keyfile


#: behaviour modules that fail to import, and the line each fails on
BROKEN_MODULES = {
    "syntax": ("from mux import ConnectionBehaviour\n\ndef broken(:\n    pass\n", 3, "SyntaxError"),
    "raising": (
        "from mux import ConnectionBehaviour\n\nclass B(ConnectionBehaviour):\n    pass\n\nRATIO = 1 / 0\n",
        6,
        "ZeroDivisionError: division by zero",
    ),
    "importing": (
        "from mux import ConnectionBehaviour\nimport mux_no_such_dependency\n",
        2,
        "ModuleNotFoundError: No module named 'mux_no_such_dependency'",
    ),
}


def broken_behaviour(tmp_path: Path, kind: str) -> tuple[Path, str, int, str]:
    """Write a failing behaviour module; returns its path, the config text naming it, its line, the error."""
    source, line, error = BROKEN_MODULES[kind]
    module = f"broken_{kind}_{tmp_path.name}"  # unique: nothing cached from another test
    path = tmp_path / f"{module}.py"
    path.write_text(source)
    text = f"behaviour: {module}:B\nlisteners:\n  - {{transport: quic, port: 0, alpn: [echo]}}\n"
    return path, text, line, error


def test_binary_file_is_one_message(tmp_path: Path) -> None:
    path = tmp_path / "server.yaml"
    path.write_bytes(b"\xff\xfe\x00\x01binary\x80")
    with pytest.raises(cfg.ConfigError) as info:
        cfg.load(path)
    assert str(info.value) == f"{path}: expected a YAML text file (UTF-8), got byte 0xff at offset 0"


def test_empty_file_and_nul_character(tmp_path: Path) -> None:
    assert "the file is empty; expected a mapping" in error_of(tmp_path, "# only a comment\n")
    assert "character 0x0000 at offset 11 is not allowed" in error_of(tmp_path, "behaviour: \x00\n")


def test_duplicate_key_is_an_error(tmp_path: Path) -> None:
    message = error_of(tmp_path, GOOD + "behaviour: behaviours.chat:Chat\n")
    assert message.endswith(":4:1: invalid YAML: duplicate key 'behaviour'"), message


def test_oversized_file_is_refused_before_parsing(tmp_path: Path) -> None:
    """A config is small: a device or a wrong path (a log, an image) must not be read without end."""
    message = error_of(tmp_path, GOOD + "#" * (cfg.MAX_FILE_BYTES + 1))
    assert message.endswith(": larger than 4 MiB; expected a server config"), message


def test_config_given_a_directory(tmp_path: Path) -> None:
    with pytest.raises(cfg.ConfigError, match=r": cannot read: Is a directory$"):
        cfg.load(tmp_path)


@pytest.mark.parametrize("kind", sorted(BROKEN_MODULES))
def test_behaviour_import_failure_names_its_file_and_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    module_path, text, line, error = broken_behaviour(tmp_path, kind)
    monkeypatch.syspath_prepend(str(tmp_path))
    message = error_of(tmp_path, text)
    assert "\n" not in message and "Traceback" not in message
    assert re.fullmatch(rf".*server\.yaml: behaviour: \S*{re.escape(module_path.name)}:{line}: {error}.*", message), (
        message
    )


def test_behaviour_failure_in_a_helper_points_at_both(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "helper_raises.py").write_text("\n\nraise RuntimeError('no config for the helper')\n")
    (tmp_path / "uses_helper.py").write_text("import os\nimport helper_raises\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    message = error_of(tmp_path, GOOD.replace("behaviours.echo:Echo", "uses_helper:B"))
    assert re.search(
        r"behaviour: \S*uses_helper\.py:2: RuntimeError: no config for the helper \(raised at \S*helper_raises\.py:3\)",
        message,
    ), message


def preflight_error(tmp_path: Path, listeners: str) -> str:
    path = write(tmp_path, SERVER + listeners)
    with pytest.raises(cfg.ConfigError) as info:
        preflight.load(path)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    assert "Traceback" not in message
    return message


def test_preflight_certificate_files(tmp_path: Path) -> None:
    certfile, keyfile = make_cert(tmp_path)
    other_cert, other_key = make_cert(tmp_path, "other")
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"this is not a certificate\n")
    missing = tmp_path / "missing.pem"
    quic = "  - {{transport: quic, port: 0, alpn: [echo], {}}}\n"

    def error(options: str) -> str:
        return preflight_error(tmp_path, quic.format(options))

    assert error(f"certfile: {garbage}, keyfile: {keyfile}").endswith(
        f": listeners[0].certfile: expected a PEM certificate (-----BEGIN CERTIFICATE-----), found none in {garbage}"
    )
    assert error(f"certfile: {missing}, keyfile: {keyfile}").endswith(
        f": listeners[0].certfile: cannot read {missing}: No such file or directory; expected a PEM certificate file"
    )
    assert f": listeners[0].keyfile: expected a PEM private key in {garbage}" in error(
        f"certfile: {certfile}, keyfile: {garbage}"
    )
    assert f": listeners[0].keyfile: required: {certfile} holds no private key" in error(f"certfile: {certfile}")
    assert ": listeners[0].keyfile: set without certfile" in error(f"keyfile: {keyfile}")
    assert f": listeners[0].keyfile: the private key does not match the certificate in {certfile}" in error(
        f"certfile: {certfile}, keyfile: {other_key}"
    )
    assert f": listeners[0].certfile: expected a PEM certificate file, got a directory: {tmp_path}" in error(
        f"certfile: {tmp_path}, keyfile: {keyfile}"
    )
    # aioquic reads each block after an END line as one more certificate: a trailing blank line breaks it
    trailing = tmp_path / "trailing.pem"
    trailing.write_bytes(certfile.read_bytes() + b"\n\n")
    assert "blank lines after the last -----END CERTIFICATE-----" in error(f"certfile: {trailing}, keyfile: {keyfile}")
    assert ": listeners[0].verify: 'required' needs cacertfile" in error("verify: required")
    assert ": listeners[0].verify: 'optional' needs cacertfile" in error("verify: optional")
    no_ca = "expected PEM CA certificates (-----BEGIN CERTIFICATE-----), found none in"
    assert f": listeners[0].cacertfile: {no_ca} {garbage}" in error(f"verify: required, cacertfile: {garbage}")
    assert f": listeners[0].cacertfile: cannot read {missing}" in error(f"cacertfile: {missing}")
    # and what is right passes: separate files, one combined file, a CA to check clients against
    combined = tmp_path / "combined.pem"
    combined.write_bytes(certfile.read_bytes() + keyfile.read_bytes())
    for good in (
        f"certfile: {certfile}, keyfile: {keyfile}",
        f"certfile: {combined}",
        f"certfile: {certfile}, keyfile: {keyfile}, verify: required, cacertfile: {other_cert}",
    ):
        preflight.load(write(tmp_path, SERVER + quic.format(good)))


@pytest.mark.parametrize(
    ("rtoinfo", "expected"),
    [
        ("{min: 500, max: 100}", "listeners[0].rtoinfo.min: expected min <= max, got min 500 > max 100"),
        (
            "{min: 500, max: 1000, initial: 100}",
            "listeners[0].rtoinfo.initial: expected within [min, max] = [500, 1000], got 100 (below min)",
        ),
        (
            "{initial: 90000}",
            "listeners[0].rtoinfo.initial: expected within [min, max] = [200, 60000], got 90000 (above max)",
        ),
    ],
)
def test_preflight_rtoinfo(tmp_path: Path, rtoinfo: str, expected: str) -> None:
    message = preflight_error(tmp_path, f"  - {{transport: sctp, port: 0, rtoinfo: {rtoinfo}}}\n")
    assert message == f"{tmp_path / 'server.yaml'}: {expected}"


@pytest.mark.parametrize(
    ("first", "second", "clash"),
    [
        ("127.0.0.1", "127.0.0.1", "udp 127.0.0.1:4433 clashes with listener 'a' (listeners[0], udp 127.0.0.1:4433)"),
        ("0.0.0.0", "127.0.0.1", "udp 127.0.0.1:4433 clashes with listener 'a' (listeners[0], udp 0.0.0.0:4433)"),
        ("127.0.0.1", "0.0.0.0", "udp 0.0.0.0:4433 clashes with listener 'a' (listeners[0], udp 127.0.0.1:4433)"),
        # the listener's IPv6 socket is dual-stack: '::' takes the port on IPv4 addresses too
        ("'::'", "127.0.0.1", "udp 127.0.0.1:4433 clashes with listener 'a' (listeners[0], udp [::]:4433)"),
        ("'::1'", "'::'", "udp [::]:4433 clashes with listener 'a' (listeners[0], udp [::1]:4433)"),
        (
            "'::ffff:127.0.0.1'",
            "127.0.0.1",
            "udp 127.0.0.1:4433 clashes with listener 'a' (listeners[0], udp 127.0.0.1:4433)",
        ),
        ("127.0.0.1", "127.0.0.2", None),
        ("127.0.0.1", "'::1'", None),
    ],
)
def test_preflight_port_clash_between_quic_and_sctp(tmp_path: Path, first: str, second: str, clash: str | None) -> None:
    """Only parsed, never bound: the port number is just text here."""
    listeners = (
        f"  - {{name: a, transport: quic, host: {first}, port: 4433, alpn: [echo]}}\n"
        f"  - {{name: b, transport: sctp, host: {second}, port: 4433}}\n"
    )
    if clash is None:
        preflight.load(write(tmp_path, SERVER + listeners))
    else:
        assert preflight_error(tmp_path, listeners).endswith(
            f": listeners[1].port: {clash}; expected a UDP port "
            "no other listener binds (QUIC and SCTP-over-UDP are both UDP)"
        )


def test_preflight_port_zero_never_clashes(tmp_path: Path) -> None:
    listeners = (
        "  - {name: a, transport: quic, host: 0.0.0.0, port: 0, alpn: [echo]}\n"
        "  - {name: b, transport: sctp, host: 0.0.0.0, port: 0}\n"
        "  - {name: c, transport: quic, host: '::', port: 0, alpn: [echo]}\n"
    )
    preflight.load(write(tmp_path, SERVER + listeners))


def test_preflight_reports_every_problem_in_one_message(tmp_path: Path) -> None:
    listeners = (
        "  - {name: a, transport: quic, port: 4433, alpn: [echo], verify: required}\n"
        "  - {name: b, transport: sctp, port: 4433, rtoinfo: {min: 300, max: 200}}\n"
        "  - {name: c, transport: quic, port: 0, alpn: [echo], host: bad..host}\n"
    )
    lines = preflight_error(tmp_path, listeners).splitlines()
    assert [line.split(": ")[1] for line in lines] == [
        "listeners[0].verify",
        "listeners[1].rtoinfo.min",
        "listeners[1].port",
        "listeners[2].host",
    ], lines


@pytest.mark.parametrize("kind", ["binary", "garbage-cert", *sorted(BROKEN_MODULES)])
def test_mux_check_prints_one_message_never_a_traceback(tmp_path: Path, kind: str) -> None:
    """Each of these printed a traceback (or passed `mux check`) before issue 9."""
    path = tmp_path / "server.yaml"
    if kind == "binary":
        path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
        expected = f"{path}: expected a YAML text file (UTF-8), got byte 0x89 at offset 0"
    elif kind == "garbage-cert":
        garbage = tmp_path / "garbage.pem"
        garbage.write_text("garbage\n")
        path.write_text(
            SERVER + f"  - {{transport: quic, port: 0, alpn: [echo], certfile: {garbage}, keyfile: {garbage}}}\n"
        )
        expected = (
            f"{path}: listeners[0].certfile: expected a PEM certificate (-----BEGIN CERTIFICATE-----), found none"
        )
    else:
        module_path, text, line, error = broken_behaviour(tmp_path, kind)
        path.write_text(text)
        # shown relative to the working directory, as the user would type it
        expected = f"{path}: behaviour: {module_path.name}:{line}: {error}"
    result = run_mux("check", str(path), cwd=tmp_path, path=tmp_path)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().startswith(expected), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_mux_check_rejects_what_serve_would(tmp_path: Path) -> None:
    """`mux check` passed all of these before issue 9; `mux serve` then failed or misbehaved on them."""
    path = write(
        tmp_path,
        SERVER
        + f"  - {{name: a, transport: quic, port: 4433, alpn: [echo], certfile: {tmp_path / 'missing.pem'}}}\n"
        + "  - {name: b, transport: quic, port: 0, alpn: [echo], verify: required}\n"
        + "  - {name: c, transport: sctp, host: 0.0.0.0, port: 4433, rtoinfo: {min: 300, max: 200}}\n",
    )
    result = run_mux("check", str(path), cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    keys = [line.split(": ")[1] for line in result.stderr.strip().splitlines()]
    assert keys == ["listeners[0].certfile", "listeners[1].verify", "listeners[2].rtoinfo.min", "listeners[2].port"]
