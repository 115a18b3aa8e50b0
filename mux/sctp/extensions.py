"""The protocol extensions an association may use, agreed in INIT and INIT-ACK.

Each side lists what it supports (RFC 5061's Supported Extensions parameter, plus RFC 3758's Forward-TSN-Supported
parameter for PR-SCTP); an association uses an extension only when both listed it. The result is a bit mask,
carried in the state cookie so the stateless server remembers it.

``MUX`` is not a protocol extension: every mux endpoint sends an Adaptation Layer Indication (RFC 5061 §4.2.7) with
the code ``MUX_ADAPTATION``, so two mux peers know each other. Between them a stream reset can carry QUIC's
application error code in a small marker message (``mux.sctp.connection``); other stacks never get one, and see a
plain stream reset. Stacks that do not know the parameter skip it (its type's high bits say so).
"""

from __future__ import annotations

from collections.abc import Iterable

from mux.sctp.params import AdaptationLayerIndicationParam, ForwardTsnSupportedParam, Param, SupportedExtensionsParam

#: RFC 3758 partial reliability: FORWARD-TSN
PRSCTP = 1
#: RFC 6525 stream reconfiguration: RE-CONFIG
RECONFIG = 2
#: RFC 8260 message interleaving: I-DATA instead of DATA (with PR-SCTP, I-FORWARD-TSN instead of FORWARD-TSN)
IDATA = 4
#: the peer is mux too (its Adaptation Layer Indication carries ``MUX_ADAPTATION``); always offered
MUX = 8
#: I-FORWARD-TSN is listed (RFC 8260 §2.3.1): what PR-SCTP needs once I-DATA is in use
IFORWARD = 16
IMPLEMENTED = PRSCTP | RECONFIG | IDATA | MUX | IFORWARD
#: "mux" and a version byte: the adaptation code mux peers recognise each other by
MUX_ADAPTATION = 0x6D757801

FORWARD_TSN = 192
RE_CONFIG = 130
I_DATA = 64
I_FORWARD_TSN = 194


def offered(prsctp: bool, reconfig: bool, idata: bool) -> int:
    """What we put in our INIT or INIT-ACK, from the configuration."""
    mask = (PRSCTP if prsctp else 0) | (RECONFIG if reconfig else 0) | (IDATA if idata else 0) | MUX
    if prsctp and idata:
        mask |= IFORWARD
    return mask & IMPLEMENTED


def agree(ours: int, theirs: int) -> int:
    """What an association uses: what both offered. A peer offering I-DATA and PR-SCTP without I-FORWARD-TSN
    (RFC 8260 §2.3 says it must) cannot skip messages under I-DATA: PR-SCTP is kept, over DATA."""
    mask = ours & theirs
    if mask & IDATA and mask & PRSCTP and not mask & IFORWARD:
        mask &= ~IDATA
    return mask


def params(features: int) -> list[Param]:
    """The INIT / INIT-ACK parameters that offer ``features``."""
    types: list[int] = []
    if features & PRSCTP:
        types.append(FORWARD_TSN)
    if features & RECONFIG:
        types.append(RE_CONFIG)
    if features & IDATA:
        types.append(I_DATA)
        if features & IFORWARD:
            types.append(I_FORWARD_TSN)
    out: list[Param] = []
    if features & PRSCTP:
        out.append(ForwardTsnSupportedParam())
    if types:
        out.append(SupportedExtensionsParam(types))
    if features & MUX:
        out.append(AdaptationLayerIndicationParam(MUX_ADAPTATION))
    return out


def names(features: int) -> list[str]:
    """The protocol extensions in use, by name (``status()``)."""
    return [name for bit, name in ((PRSCTP, "prsctp"), (RECONFIG, "reconfig"), (IDATA, "idata")) if features & bit]


def peer_offers(params: Iterable[Param]) -> int:
    """What the peer's INIT or INIT-ACK offers."""
    mask = 0
    for p in params:
        kind = type(p)
        if kind is ForwardTsnSupportedParam:
            mask |= PRSCTP
        elif kind is SupportedExtensionsParam:
            types = set(p.chunk_types)  # type: ignore[union-attr]
            if FORWARD_TSN in types:
                mask |= PRSCTP
            if RE_CONFIG in types:
                mask |= RECONFIG
            if I_DATA in types:
                mask |= IDATA
            if I_FORWARD_TSN in types:
                mask |= IFORWARD
        elif kind is AdaptationLayerIndicationParam and p.code == MUX_ADAPTATION:  # type: ignore[union-attr]
            mask |= MUX
    return mask
