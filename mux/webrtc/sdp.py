"""The SDP a data-channel-only WebRTC peer offers, and mux's ICE-lite answer (RFC 8866, RFC 8841, JSEP)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field


class SdpError(ValueError):
    """An offer mux cannot answer; the message says why (it goes back in the 400)."""


@dataclass(slots=True)
class Offer:
    ufrag: str
    pwd: str
    fingerprint: str
    setup: str
    mid: str
    sctp_port: int = 5000
    max_message_size: int = 65536
    candidates: list[str] = field(default_factory=list)


#: the most SDP text we read from a request (a data channel offer is about 1 KB; with every candidate a few)
MAX_SDP = 64 * 1024


def parse_offer(text: str) -> Offer:
    session: dict[str, str] = {}
    media: dict[str, str] = {}
    candidates: list[str] = []
    in_app = False
    seen_app = False
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("m="):
            parts = line[2:].split()
            if in_app or seen_app:
                raise SdpError("one m=application section only: mux serves data channels, not media")
            if len(parts) < 3 or parts[0] != "application" or "DTLS/SCTP" not in parts[2]:
                raise SdpError(f"mux serves data channels only, not {line!r}")
            in_app = seen_app = True
            continue
        if not line.startswith("a="):
            continue
        name, _, value = line[2:].partition(":")
        target = media if in_app else session
        if name == "candidate":
            candidates.append(value)
        elif name == "fingerprint" and not value.lower().startswith("sha-256 "):
            continue  # another hash: look for the sha-256 one
        elif name not in target:
            target[name] = value
    if not seen_app:
        raise SdpError("no m=application section: open a data channel before making the offer")

    def get(name: str) -> str:
        value = media.get(name) or session.get(name)
        if not value:
            raise SdpError(f"the offer has no a={name}")
        return value

    setup = get("setup")
    if setup not in ("actpass", "active"):
        raise SdpError(f"a=setup:{setup}: mux is the DTLS server, so the offerer must be active or actpass")
    try:
        port = int(media.get("sctp-port", "5000"))
        size = int(media.get("max-message-size", "65536"))
    except ValueError:
        raise SdpError("a=sctp-port and a=max-message-size must be numbers") from None
    return Offer(
        ufrag=get("ice-ufrag"),
        pwd=get("ice-pwd"),
        fingerprint=get("fingerprint"),
        setup=setup,
        mid=media.get("mid", "0"),
        sctp_port=port,
        max_message_size=size,
        candidates=candidates,
    )


def credentials() -> tuple[str, str]:
    """A fresh ICE ufrag (4+ characters) and password (22+), from the ice-char set (RFC 8839 §5.4)."""
    return secrets.token_hex(4), secrets.token_urlsafe(18).replace("-", "+").replace("_", "/")


def answer(offer: Offer, *, ufrag: str, pwd: str, fingerprint: str, host: str, port: int, max_message_size: int) -> str:
    """Our answer: ICE-lite, one host candidate (the listener's UDP socket), DTLS passive, SCTP port 5000."""
    family = "IP6" if ":" in host else "IP4"
    lines = [
        "v=0",
        f"o=- {secrets.randbits(62)} 2 IN {family} {host}",
        "s=-",
        "t=0 0",
        "a=ice-lite",
        f"a=group:BUNDLE {offer.mid}",
        "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
        f"c=IN {family} {host}",
        f"a=mid:{offer.mid}",
        f"a=ice-ufrag:{ufrag}",
        f"a=ice-pwd:{pwd}",
        f"a=fingerprint:{fingerprint}",
        "a=setup:passive",
        "a=sctp-port:5000",
        f"a=max-message-size:{max_message_size}",
        f"a=candidate:1 1 udp 2130706431 {host} {port} typ host",
        "a=end-of-candidates",
    ]
    return "\r\n".join(lines) + "\r\n"
