"""A self-signed certificate for a server started with none, so the first run just works."""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

log = logging.getLogger("mux.quic")


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mux"


def self_signed(host: str) -> tuple[Path, Path]:
    """Return (certfile, keyfile) for ``host``, made once and kept under the user's cache dir.

    Keeping it means a client can pin it with ``--cacertfile`` across server restarts.
    """
    directory = cache_dir()
    safe = host.replace(":", "_").replace("/", "_") or "any"
    certfile = directory / f"selfsigned-{safe}.pem"
    keyfile = directory / f"selfsigned-{safe}.key"
    if certfile.exists() and keyfile.exists():
        cert = x509.load_pem_x509_certificate(certfile.read_bytes())
        if cert.not_valid_after_utc > datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=1):
            log.warning("no certificate configured: using the self-signed certificate %s", certfile)
            return certfile, keyfile
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    for literal in {host, "127.0.0.1", "::1"}:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(literal)))
        except ValueError:
            if literal and literal != "localhost":
                names.append(x509.DNSName(literal))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host or "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    keyfile.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    os.chmod(keyfile, 0o600)
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    log.warning(
        "no certificate configured: generated a self-signed one at %s (clients: --cacertfile %s, or --insecure)",
        certfile,
        certfile,
    )
    return certfile, keyfile


def webtransport_certificate(directory: Path, days: int = 13) -> tuple[Path, Path, bytes]:
    """An ECDSA P-256 certificate for 127.0.0.1 and localhost valid ``days`` (a browser's
    ``serverCertificateHashes`` takes none valid for more than 14): (certfile, keyfile, SHA-256 of its DER)."""
    import hashlib

    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    alt = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .sign(key, hashes.SHA256())
    )
    certfile, keyfile = directory / "webtransport.pem", directory / "webtransport.key"
    keyfile.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    os.chmod(keyfile, 0o600)
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return certfile, keyfile, hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).digest()


if __name__ == "__main__":  # python -m mux.quic.certs DIR: a certificate browsers take by hash (conf/browser.yaml)
    import sys

    made = webtransport_certificate(Path(sys.argv[1] if len(sys.argv) > 1 else ".mux-demo"))
    print(f"{made[0]} and {made[1]}: valid 13 days; SHA-256 {made[2].hex()}")
