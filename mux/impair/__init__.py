"""Userspace UDP impairment (loss, delay, jitter, reordering, duplication, rate, MTU): our stand-in for netem."""

from mux.impair.model import Impairment, ImpairModel, ImpairStats
from mux.impair.proxy import ImpairProxy, ProxyStats, parse_address

__all__ = ["ImpairModel", "ImpairProxy", "ImpairStats", "Impairment", "ProxyStats", "parse_address"]
