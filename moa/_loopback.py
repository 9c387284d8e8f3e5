"""Whether a host a server binds is a loopback interface: ``moa serve`` and ``moa view`` answer
web pages differently there (DNS rebinding). Standard library only: both parsers load it on every
start of ``moa``."""

from __future__ import annotations

import ipaddress

__all__ = ["LOOPBACK_NAMES", "on_loopback"]

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def on_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback interface: a loopback name or any loopback address
    (127.0.0.0/8, ``::1``, bracketed or not; ``--host 127.0.0.2`` was taken for a public one)."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
