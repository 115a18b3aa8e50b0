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


def ec_certificate(
    common_name: str, days: float, alt_names: list[x509.GeneralName] | None = None, *, ca: bool = False
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A self-signed ECDSA P-256 certificate and its key, valid from five minutes ago for ``days``."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
    )
    if alt_names:
        builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
    if ca:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    return builder.sign(key, hashes.SHA256()), key


def write_pem(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey, certfile: Path, keyfile: Path) -> None:
    """The certificate and its PKCS#8 key as PEM files, the key readable by its owner only."""
    keyfile.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    os.chmod(keyfile, 0o600)
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


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
    names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    for literal in {host, "127.0.0.1", "::1"}:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(literal)))
        except ValueError:
            if literal and literal != "localhost":
                names.append(x509.DNSName(literal))
    cert, key = ec_certificate(host or "localhost", 365, names, ca=True)
    write_pem(cert, key, certfile, keyfile)
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
    alt: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
    cert, key = ec_certificate("127.0.0.1", days, alt)
    certfile, keyfile = directory / "webtransport.pem", directory / "webtransport.key"
    write_pem(cert, key, certfile, keyfile)
    return certfile, keyfile, hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).digest()


if __name__ == "__main__":  # python -m mux.quic.certs DIR: a certificate browsers take by hash (conf/browser.yaml)
    import sys

    made = webtransport_certificate(Path(sys.argv[1] if len(sys.argv) > 1 else ".mux-demo"))
    print(f"{made[0]} and {made[1]}: valid 13 days; SHA-256 {made[2].hex()}")
