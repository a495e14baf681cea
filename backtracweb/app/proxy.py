"""
Who the client really is, when requests come through trusted proxies.

Forwarding headers (RFC 7239 C{Forwarded}, and C{X-Forwarded-For},
C{-Proto}, C{-Host}) are believed only when the connection comes from an
address in C{[proxy] trusted}.  The client is then the right-most hop that
is not itself a trusted proxy: every hop to the left of it could have been
written by the client.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Iterable, Mapping

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-_]+)(:\d{1,5})?$")


@dataclass(frozen=True)
class Forwarded:
    """
    What the proxies said about the original request.

    @ivar client: the client's IP address, or None when the proxy hid it
        (C{for=unknown} or an obfuscated name).
    @ivar scheme: C{http} or C{https}, or None when no proxy said.
    @ivar host: the Host the client asked for, or None when no proxy said.
    """

    client: str | None
    scheme: str | None = None
    host: str | None = None


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    """
    Addresses and CIDR blocks as networks; a bare address is a /32 or /128.

    @raise ValueError: naming the value that is neither.
    """
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ValueError(value) from None
    return tuple(networks)


UNIX = "unix"
"""In an address list, stands for every peer on a unix socket."""


class Addresses:
    """
    A set of IP networks, plus optionally every unix-socket peer, given as
    the strings a configuration lists (C{127.0.0.1}, C{10.0.0.0/8}, C{unix}).
    """

    def __init__(self, values: Iterable[str] = ()) -> None:
        values = tuple(values)
        self.unix = UNIX in values
        self.networks = parse_networks(v for v in values if v != UNIX)

    def __bool__(self) -> bool:
        return bool(self.networks) or self.unix

    def __contains__(self, address: str) -> bool:
        """Whether C{address} (an IP address string, or C{unix}) is in the set."""
        if address == UNIX:
            return self.unix
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self.networks)


class TrustedProxies(Addresses):
    """The proxies whose forwarding headers are believed."""

    def trusts(self, address: str) -> bool:
        """Whether C{address} is a trusted proxy."""
        return address in self

    def resolve(self, peer: str, headers: Mapping[str, str]) -> Forwarded | None:
        """
        The original client, scheme and host for a request from C{peer}, or
        None if C{peer} is not trusted or sent no usable forwarding header.

        @param headers: lower-case header names to their (comma-joined) values.
        """
        if not self or not self.trusts(peer):
            return None
        if "forwarded" in headers:
            hops = _parse_forwarded(headers["forwarded"])
        elif any(name.startswith("x-forwarded-") for name in headers):
            hops = _parse_x_forwarded(headers)
        else:
            return None
        # Walk from the nearest hop outwards while the hops are our proxies.
        for hop in reversed(hops):
            address = _strip_port(hop.get("for", ""))
            if address and self.trusts(address) and hop is not hops[0]:
                continue
            scheme = hop.get("proto", "").lower()
            host = hop.get("host", "")
            forwarded = Forwarded(
                client=str(ipaddress.ip_address(address)) if _is_ip(address) else None,
                scheme=scheme if scheme in ("http", "https") else None,
                host=host if _HOST.match(host) else None,
            )
            return forwarded if forwarded != Forwarded(None) else None
        return None


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _strip_port(value: str) -> str:
    """C{[2001:db8::1]:4711} -> C{2001:db8::1}; C{192.0.2.1:80} -> C{192.0.2.1}."""
    value = value.strip()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else ""
    if value.count(":") == 1:
        return value.split(":")[0]
    return value


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


def _parse_forwarded(value: str) -> list[dict[str, str]]:
    """RFC 7239 elements, left (farthest) to right (nearest)."""
    hops = []
    for element in _split_outside_quotes(value, ","):
        pairs: dict[str, str] = {}
        for pair in _split_outside_quotes(element, ";"):
            name, sep, raw = pair.partition("=")
            if sep:
                pairs[name.strip().lower()] = _unquote(raw)
        hops.append(pairs)
    return hops


def _parse_x_forwarded(headers: Mapping[str, str]) -> list[dict[str, str]]:
    """X-Forwarded-For hops; -Proto and -Host describe the farthest hop kept."""
    if "x-forwarded-for" in headers:
        hops = [{"for": a.strip()} for a in headers["x-forwarded-for"].split(",")]
    else:
        hops = [{}]  # only -Proto or -Host: the client is the peer
    # Proxies append to X-Forwarded-For but rarely to -Proto and -Host: an
    # equal-length list lines up hop by hop, otherwise the nearest value
    # (written by our trusted peer) describes every hop.
    for name, key in (("x-forwarded-proto", "proto"), ("x-forwarded-host", "host")):
        if name not in headers:
            continue
        values = [v.strip() for v in headers[name].split(",")]
        if len(values) == len(hops):
            for hop, value in zip(hops, values):
                hop[key] = value
        else:
            for hop in hops:
                hop[key] = values[-1]
    return hops


def _split_outside_quotes(value: str, separator: str) -> list[str]:
    parts, current, quoted, escaped = [], [], False, False
    for char in value:
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return [part for part in parts if part.strip()]
