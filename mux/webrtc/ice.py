"""ICE-lite (RFC 8445 §2.5): a server with one host candidate answers the peer's connectivity checks.

A lite agent never sends checks. It answers each Binding request that carries our short-term credentials
(USERNAME ``ours:theirs`` and MESSAGE-INTEGRITY under our password) and a good FINGERPRINT, and learns from them
the addresses the peer can reach it from. The controlling peer picks one with USE-CANDIDATE (nomination); its
later checks keep consent fresh (RFC 7675): with none for ``consent_timeout`` the path is gone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mux.transport import Address
from mux.webrtc import stun

#: peer addresses one session learns at most (a peer has a few candidates)
MAX_ADDRESSES = 16


@dataclass(slots=True)
class IceLite:
    local_ufrag: str
    local_pwd: str
    remote_ufrag: str
    remote_pwd: str
    #: addresses with a valid check, and when the last one came
    checked: dict[Address, float] = field(default_factory=dict)
    #: the nominated address (the latest USE-CANDIDATE), or the first checked one until then
    selected: Address | None = None
    nominated: bool = False

    @property
    def key(self) -> bytes:
        return self.local_pwd.encode()

    def valid(self, msg: stun.Message) -> bool:
        """A connectivity check for us: a Binding request with our username, our integrity and a fingerprint."""
        if msg.type != stun.BINDING_REQUEST or not msg.check_fingerprint():
            return False
        username = msg.get(stun.USERNAME)
        if username is None or username.decode("utf-8", "replace") != f"{self.local_ufrag}:{self.remote_ufrag}":
            return False
        return msg.check_integrity(self.key)

    def on_check(self, msg: stun.Message, addr: Address, now: float) -> bytes:
        """A valid check from ``addr``: note it (nomination, consent) and answer it."""
        if addr in self.checked or len(self.checked) < MAX_ADDRESSES:
            self.checked[addr] = now
        if msg.has(stun.USE_CANDIDATE):
            self.selected = addr
            self.nominated = True
        elif self.selected is None:
            self.selected = addr
        return stun.binding_success(msg, (str(addr[0]), int(addr[1])), self.key)

    def consent_expired(self, now: float, timeout: float) -> bool:
        selected = self.selected
        if selected is None:
            return False
        return now - self.checked.get(selected, now) > timeout


def username_ufrag(msg: stun.Message) -> str | None:
    """The local ufrag a check names (``ours:theirs``): which session it is for."""
    username = msg.get(stun.USERNAME)
    if username is None:
        return None
    return username.split(b":", 1)[0].decode("utf-8", "replace")
