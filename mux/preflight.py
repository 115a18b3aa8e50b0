"""Everything ``mux serve`` would reject that can be found without binding a socket.

``mux check`` and ``mux serve`` both run :func:`check` (serve before it binds), so a file that
passes ``check`` fails at start only for reasons that need the network: a port another process
holds, an address not on this machine, a port below 1024 without the privilege.

Checks, each reported as ``FILE: KEY.PATH: what was expected``:

* QUIC files, loaded the way the listener loads them (aioquic's ``load_cert_chain``, OpenSSL for
  the CA file): readable, PEM, a private key that matches the certificate;
* cross-field rules: ``rtoinfo`` ordered, ``verify`` with a CA file, a key with its certificate;
* UDP port clashes between listeners (QUIC and SCTP-over-UDP are both UDP).

What only binding can tell, ``Server.start`` words with :func:`describe_bind_error`.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aioquic.quic.configuration import QuicConfiguration
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from mux import config as cfg

#: key types aioquic can sign a TLS 1.3 handshake with
_SIGNING_KEYS = (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)
_PEM_CERT = b"-----BEGIN CERTIFICATE-----"


class Problems:
    """Collects ``(key path, what was expected)`` pairs; every one is reported, not just the first."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def add(self, key: str, message: str) -> None:
        self.items.append((key, message))

    def raise_for(self, source: str) -> None:
        if self.items:
            raise cfg.ConfigError("\n".join(f"{source}: {key}: {message}" for key, message in self.items))


def load(path: str | Path) -> Any:
    """``cfg.load`` and then :func:`check`: what ``mux check`` and ``mux serve`` start with."""
    config = cfg.load(path)
    check(config, str(path))
    return config


def check(config: Any, source: str = "<config>") -> None:
    """Raise one ConfigError naming every problem ``serve`` would hit, short of binding."""
    problems = Problems()
    for i, listener in enumerate(config.listeners):
        key = f"listeners[{i}]"
        if listener.transport == "quic":
            check_quic_listener(listener, key, problems)
        elif listener.transport == "sctp":
            check_sctp_listener(listener, key, problems)
        elif listener.transport == "webrtc":
            check_webrtc_listener(listener, key, problems)
        if getattr(listener, "pcap", None) is not None:
            check_writable(listener.pcap, f"{key}.pcap", False, problems)
    check_ports(config.listeners, problems)
    control = getattr(config, "control", None)
    if control is not None:
        check_control_socket(control.socket, problems)
    problems.raise_for(source)


#: sun_path holds 108 bytes with the terminating NUL
MAX_UNIX_PATH = 107


def check_control_socket(path: str, problems: Problems) -> None:
    """The control socket's path fits a Unix socket address, its folder exists, and nothing but a socket is there."""
    key = "control.socket"
    if len(os.fsencode(path)) > MAX_UNIX_PATH:
        problems.add(key, f"expected a path of at most {MAX_UNIX_PATH} bytes (a Unix socket's limit), got {path!r}")
        return
    folder = Path(path).parent
    if not folder.is_dir():
        problems.add(key, f"expected a path in an existing folder, but {str(folder)!r} is not one")
    elif Path(path).exists() and not Path(path).is_socket():
        problems.add(key, f"expected a path where a socket can be made, but {path!r} is a file already there")


# -- files -------------------------------------------------------------------------------------------


def read_file(path: Path, key: str, expected: str, problems: Problems) -> bytes | None:
    """The bytes of a file the server will open, or None with the reason recorded."""
    try:
        return cfg.read_bounded(path)
    except cfg.FileTooLarge:
        problems.add(key, f"expected {expected}, got more than {cfg.MAX_FILE_BYTES >> 20} MiB in {path}")
    except IsADirectoryError:
        problems.add(key, f"expected {expected}, got a directory: {path}")
    except OSError as exc:
        problems.add(key, f"cannot read {path}: {exc.strerror or exc}; expected {expected}")
    except ValueError as exc:  # an embedded NUL
        problems.add(key, f"cannot read {path}: {exc}; expected {expected}")
    return None


def _why(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    # cryptography appends a URL to its FAQ and the OpenSSL error stack: keep the sentence
    text = text.split(" See https://")[0]
    return text if len(text) <= 200 else text[:197] + "..."


def check_certificate_chain(
    certfile: Path, keyfile: Path | None, problems: Problems, where: str = "certfile", key_where: str = "keyfile"
) -> None:
    """``certfile`` (and ``keyfile``) as aioquic's ``load_cert_chain`` will read them at start."""
    data = read_file(certfile, where, "a PEM certificate file", problems)
    if data is None:
        return
    if _PEM_CERT not in data:
        problems.add(where, f"expected a PEM certificate ({_PEM_CERT.decode()}), found none in {certfile}")
        return
    private_key: Any = None
    if keyfile is not None:
        key_data = read_file(keyfile, key_where, "a PEM private key file", problems)
        if key_data is None:
            return
        try:
            private_key = serialization.load_pem_private_key(key_data, password=None)
        except TypeError:
            problems.add(key_where, f"{keyfile} is encrypted; expected an unencrypted PEM private key (mode 0600)")
            return
        except Exception as exc:
            problems.add(key_where, f"expected a PEM private key in {keyfile}: {_why(exc)}")
            return
    quic = QuicConfiguration(is_client=False)
    try:
        quic.load_cert_chain(certfile, keyfile)
    except Exception as exc:
        problems.add(where, f"expected a PEM certificate chain in {certfile}: {_chain_hint(data) or _why(exc)}")
        return
    private_key = quic.private_key if private_key is None else private_key
    if private_key is None:
        if b"PRIVATE KEY-----" in data:
            problems.add(key_where, f"required: aioquic does not read the key in {certfile}; {_KEY_IN_CERTFILE}")
        else:
            problems.add(key_where, f"required: {certfile} holds no private key; set keyfile to the certificate's key")
        return
    if not isinstance(private_key, _SIGNING_KEYS):
        problems.add(
            key_where if keyfile is not None else where,
            f"expected an RSA, EC, Ed25519 or Ed448 private key, got {type(private_key).__name__}",
        )
        return
    if _public_der(private_key.public_key()) != _public_der(quic.certificate.public_key()):
        problems.add(
            key_where if keyfile is not None else where,
            f"the private key does not match the certificate in {certfile}",
        )


_KEY_IN_CERTFILE = (
    "a key in certfile must be PKCS#8 (-----BEGIN PRIVATE KEY-----) and follow the certificates; or set keyfile to it"
)


def _chain_hint(data: bytes) -> str | None:
    """Why aioquic's reader (certificates split on their END line) fails where a PEM parser would not."""
    chunks = data.split(b"\n-----BEGIN PRIVATE KEY-----\n")[0].split(b"-----END CERTIFICATE-----\n")
    if any(b"PRIVATE KEY-----" in chunk for chunk in chunks):
        return _KEY_IN_CERTFILE
    if chunks[-1] and not chunks[-1].strip():
        return "blank lines after the last -----END CERTIFICATE----- (aioquic reads them as one more certificate)"
    return None


def _public_der(public_key: Any) -> bytes:
    return bytes(public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))


def check_ca_file(cafile: Path, where: str, problems: Problems) -> None:
    """A CA file as OpenSSL loads it when it verifies a peer (only then, in the middle of a handshake)."""
    data = read_file(cafile, where, "a PEM file of CA certificates", problems)
    if data is None:
        return
    if _PEM_CERT not in data:
        problems.add(where, f"expected PEM CA certificates ({_PEM_CERT.decode()}), found none in {cafile}")
        return
    try:
        x509.load_pem_x509_certificates(data)
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=str(cafile))
    except (ValueError, ssl.SSLError, OSError) as exc:
        problems.add(where, f"expected PEM CA certificates in {cafile}: {_why(exc)}")


def check_writable(path: Path, where: str, directory: bool, problems: Problems) -> None:
    """A path the listener creates at start (qlog_dir, sslkeylogfile), checked without creating it."""
    kind = "directory" if directory else "file"
    if path.exists():
        if directory != path.is_dir():
            problems.add(where, f"expected a {kind}, got {'a directory' if path.is_dir() else 'a file'}: {path}")
        elif not os.access(path, os.W_OK):
            problems.add(where, f"expected a writable {kind}: {path} is not writable")
        return
    parent = path.parent
    if not directory and not parent.is_dir():
        problems.add(where, f"expected a file in an existing directory: {parent} does not exist")
        return
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        problems.add(where, f"cannot create {path}: {parent} is not a writable directory")


# -- per transport -----------------------------------------------------------------------------------


def check_quic_listener(lst: Any, key: str, problems: Problems) -> None:
    if lst.keyfile is not None and lst.certfile is None:
        problems.add(
            f"{key}.keyfile",
            "set without certfile; expected both (or neither: a self-signed certificate is then made)",
        )
    elif lst.certfile is not None:
        check_certificate_chain(lst.certfile, lst.keyfile, problems, f"{key}.certfile", f"{key}.keyfile")
    if lst.verify in ("optional", "required") and lst.cacertfile is None:
        problems.add(
            f"{key}.verify",
            f"{lst.verify!r} needs cacertfile: the CA certificates that client certificates are checked against",
        )
    if lst.cacertfile is not None:
        check_ca_file(lst.cacertfile, f"{key}.cacertfile", problems)
    for j, protocol in enumerate(lst.alpn):
        if not 1 <= len(protocol.encode()) <= 255:
            problems.add(f"{key}.alpn[{j}]", f"expected 1 to 255 bytes (TLS ALPN), got {protocol!r}")
    if 0 < lst.idle_timeout_ms <= lst.keep_alive_interval_ms:
        problems.add(
            f"{key}.keep_alive_interval_ms",
            f"expected less than idle_timeout_ms ({lst.idle_timeout_ms}): the connection would time out "
            "before its first keep-alive",
        )
    if lst.qlog_dir is not None:
        check_writable(lst.qlog_dir, f"{key}.qlog_dir", True, problems)
    if lst.sslkeylogfile is not None:
        check_writable(lst.sslkeylogfile, f"{key}.sslkeylogfile", False, problems)


def check_sctp_listener(lst: Any, key: str, problems: Problems) -> None:
    if lst.transport == "sctp":
        check_encapsulation(lst, key, problems)
    check_rtoinfo(lst, key, problems)


def check_encapsulation(lst: Any, key: str, problems: Problems) -> None:
    if lst.encapsulation == "none" and "port" in lst.model_fields_set:
        problems.add(
            f"{key}.port",
            "SCTP directly on IP (encapsulation: none) has no UDP port; expected no port, and the SCTP port to "
            "listen on in sctp_port",
        )
    if lst.encapsulation == "udp" and lst.sctp_port == 0:
        problems.add(
            f"{key}.sctp_port", "expected 1-65535 inside UDP (0, a free port, is only for encapsulation: none)"
        )


def check_rtoinfo(lst: Any, key: str, problems: Problems) -> None:
    rto = lst.rtoinfo
    if rto.min > rto.max:
        problems.add(f"{key}.rtoinfo.min", f"expected min <= max, got min {rto.min} > max {rto.max}")
    elif not rto.min <= rto.initial <= rto.max:
        side = "below min" if rto.initial < rto.min else "above max"
        problems.add(
            f"{key}.rtoinfo.initial",
            f"expected within [min, max] = [{rto.min}, {rto.max}], got {rto.initial} ({side})",
        )


def check_webrtc_listener(lst: Any, key: str, problems: Problems) -> None:
    """The SCTP options as for ``sctp``, and the files the signalling server reads: the page and the certificate."""
    check_sctp_listener(lst, key, problems)
    if lst.encapsulation != "udp":
        problems.add(f"{key}.encapsulation", "expected udp: a data channel's SCTP runs over DTLS over UDP")
    if lst.primary_addr is not None:
        problems.add(f"{key}.primary_addr", "expected none: a data channel's SCTP has one path (ICE picks it)")
    if lst.page is not None:
        read_file(Path(lst.page), f"{key}.page", "an HTML file", problems)
    if lst.webtransport is not None:
        read_file(Path(lst.webtransport.certfile), f"{key}.webtransport.certfile", "a PEM certificate", problems)


# -- ports -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bound:
    """Where a listener's UDP socket will be bound, as ``mux.udp.open_socket`` resolves it."""

    index: int
    name: str
    family: int
    address: ipaddress.IPv4Address | ipaddress.IPv6Address
    port: int

    def overlaps(self, other: Bound) -> bool:
        if self.port != other.port or self.port == 0:
            return False
        # open_socket clears IPV6_V6ONLY: '::' takes the port on every IPv4 and IPv6 address
        if any(b.family == socket.AF_INET6 and b.address.is_unspecified for b in (self, other)):
            return True
        if self.address.version != other.address.version:
            return False
        return self.address == other.address or self.address.is_unspecified or other.address.is_unspecified

    def __str__(self) -> str:
        shown = f"[{self.address}]" if self.address.version == 6 else str(self.address)
        return f"udp {shown}:{self.port}"


def resolve_bind(host: str, port: int) -> tuple[int, ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The family and address ``open_socket`` would bind (the first getaddrinfo answer)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE)
    family, _, _, _, sockaddr = infos[0]
    address = ipaddress.ip_address(str(sockaddr[0]).split("%")[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        # a v4-mapped address binds the IPv4 address itself on a dual-stack socket
        return socket.AF_INET, address.ipv4_mapped
    return family, address


def on_ip(listener: Any) -> bool:
    """SCTP directly on IP (``encapsulation: none``): no UDP socket, a raw one per SCTP port."""
    return getattr(listener, "encapsulation", "udp") == "none"


def check_ports(listeners: list[Any], problems: Problems) -> None:
    bound: list[Bound] = []
    raw: dict[tuple[int, int], int] = {}  # (family, SCTP port) -> listener index, for SCTP on IP
    for i, lst in enumerate(listeners):
        hosts = [lst.host] if isinstance(lst.host, str) else list(lst.host)  # SCTP: several (multi-homing)
        for j, host in enumerate(hosts):
            key = f"listeners[{i}].host" + (f"[{j}]" if len(hosts) > 1 else "")
            try:
                family, address = resolve_bind(host, 0 if on_ip(lst) else lst.port)
            except (OSError, UnicodeError, ValueError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else _why(exc)
                problems.add(key, f"expected an address or a name that resolves: {host!r}: {reason}")
                continue
            if on_ip(lst):
                taken = (family, lst.sctp_port)
                if lst.sctp_port and raw.get(taken, i) != i:
                    other = listeners[raw[taken]]
                    problems.add(
                        f"listeners[{i}].sctp_port",
                        f"SCTP port {lst.sctp_port} on IP clashes with listener {cfg.listener_name(other)!r} "
                        f"(listeners[{raw[taken]}]); expected one listener per SCTP port and address family "
                        "(on IP the port is the host's, whatever the address)",
                    )
                raw.setdefault(taken, i)
                continue
            here = Bound(i, cfg.listener_name(lst), family, address, lst.port)
            for other_bound in bound:
                if here.overlaps(other_bound) and other_bound.index != i:
                    problems.add(
                        f"listeners[{i}].port",
                        f"{here} clashes with listener {other_bound.name!r} (listeners[{other_bound.index}], "
                        f"{other_bound}); expected a UDP port no other listener binds (QUIC and SCTP-over-UDP are "
                        "both UDP)",
                    )
                    break
            bound.append(here)


# -- at bind time ------------------------------------------------------------------------------------

_BIND_ERRORS = {
    errno.EADDRINUSE: "address already in use",
    errno.EACCES: "permission denied (ports below 1024 need privileges)",
    errno.EADDRNOTAVAIL: "cannot assign the address: it is not one of this machine's",
}


def describe_bind_error(exc: BaseException) -> str:
    """One line for why a listener could not start: the errno's meaning, never a traceback."""
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host: {exc.strerror or exc}"
    if isinstance(exc, OSError):
        known = _BIND_ERRORS.get(exc.errno or 0)
        if known is not None:
            return known
        detail = exc.strerror or _why(exc)
        return f"{detail}: {exc.filename}" if exc.filename else detail
    return f"{type(exc).__name__}: {_why(exc)}"


def host_port(host: str | list[str], port: int) -> str:
    """``HOST:PORT`` as configured, with IPv6 literals in brackets (several hosts: ``{A,B}:PORT``)."""
    if not isinstance(host, str):
        return "{" + ",".join(f"[{h}]" if ":" in h else h for h in host) + f"}}:{port}"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def listener_address(listener: Any) -> str:
    """Where a listener listens, for messages: its UDP address, or its SCTP port on IP."""
    if on_ip(listener):
        return f"sctp {host_port(listener.host, listener.sctp_port)} on IP"
    return udp_address(listener.host, listener.port)


def udp_address(host: str | list[str], port: int) -> str:
    return f"udp {host_port(host, port)}"
