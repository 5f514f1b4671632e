"""Which callback URLs the service may call: no SSRF.

A callback URL must be `https://` to a host whose every address is public: loopback, private,
link-local (the cloud metadata service at 169.254.169.254), multicast, unspecified and the
other ranges that are not globally routable are refused, and so are IPv6 addresses that carry
an IPv4 address (IPv4-mapped, IPv4-compatible, NAT64, 6to4, Teredo) whose IPv4 address is. The
host is resolved when a request is accepted (its 422 names `callback_url`) and again before
each delivery, since DNS may change in between; the delivery then connects to the address that
was checked, never to a name resolved a second time. WEBHOOK_ALLOW_HOSTS names the exceptions
(`host` or `host:port`), for development and tests: those may be `http://` and any address.

A refusal says what kind of address a name leads to, never the address: the caller would map
our internal network through it. Names are resolved by `app.webhooks.resolver`, on threads of
its own, so the accept path never blocks on DNS and mail never waits behind a callback's name.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from app.webhooks.resolver import WebhookResolver

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_URL_CHARS = 2048
RESOLVE_SECONDS = 2.0  # what a lookup may take at accept time and before each delivery
_DEFAULT_PORTS = {"http": 80, "https": 443}
# IPv6 prefixes whose last 32 bits are an IPv4 address that packets end up at
_EMBEDDING_IPV4 = (
    ipaddress.IPv6Network("64:ff9b::/96"),  # NAT64, the well-known prefix (RFC 6052)
    ipaddress.IPv6Network("::/96"),  # IPv4-compatible, deprecated (RFC 4291)
)
# Local-use NAT64 (RFC 8215): where its IPv4 address sits depends on the network's own set-up
# (prefix /48 to /96), and it translates into that network; never a public destination.
_LOCAL_NAT64 = ipaddress.IPv6Network("64:ff9b:1::/48")


class RefusedTarget(ValueError):
    """The URL may not be called; the message says why (never echoing more than the host)."""


@dataclass(frozen=True)
class Target:
    """A callback URL taken apart: where to connect and what to ask for."""

    url: str
    scheme: str
    host: str  # lower case, without the brackets of an IPv6 literal
    port: int
    path: str  # path and query, as sent in the request line

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == _DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"

    def at(self, address: IPAddress) -> str:
        """The URL with the host replaced by `address`: connect there, and nowhere else."""
        shown = f"[{address}]" if address.version == 6 else str(address)
        return f"{self.scheme}://{shown}:{self.port}{self.path}"


def parse_target(url: str) -> Target:
    """The URL's parts; RefusedTarget unless it is an absolute http(s) URL with a host, and no
    credentials or fragment (the URL is stored and shown: it must not carry a password)."""
    if len(url) > MAX_URL_CHARS:
        raise RefusedTarget(f"longer than {MAX_URL_CHARS} characters")
    if not url.isascii() or any(c.isspace() or not c.isprintable() for c in url):
        raise RefusedTarget(
            "must be ASCII without spaces or control characters (IDNA and %-escapes)"
        )
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise RefusedTarget(f"is not a valid URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise RefusedTarget("must be an https:// URL")
    if not parts.hostname:
        raise RefusedTarget("has no host")
    if parts.username is not None or parts.password is not None:
        raise RefusedTarget(
            "must not carry a user name or password; sign-in is the signature's job"
        )
    if parts.fragment or url.endswith("#"):
        raise RefusedTarget("must not have a #fragment")
    if port == 0:
        # urlsplit reads ":0" as 0, which `or` would turn into the scheme's port
        raise RefusedTarget("has port 0, which no server listens on")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(
        url=url,
        scheme=scheme,
        host=parts.hostname.rstrip(".") or parts.hostname,
        port=port or _DEFAULT_PORTS[scheme],
        path=path,
    )


class AllowList:
    """WEBHOOK_ALLOW_HOSTS: `host` (any port) or `host:port` entries that skip the checks."""

    def __init__(self, entries: Iterable[str]) -> None:
        self._hosts: set[str] = set()
        self._host_ports: set[tuple[str, int]] = set()
        for entry in entries:
            host, port = split_entry(entry)
            if port is None:
                self._hosts.add(host)
            else:
                self._host_ports.add((host, port))

    def allows(self, target: Target) -> bool:
        return target.host in self._hosts or (target.host, target.port) in self._host_ports


def split_entry(entry: str) -> tuple[str, int | None]:
    """`host`, `host:port`, `[v6]` or `[v6]:port`, as WEBHOOK_ALLOW_HOSTS takes them;
    ValueError naming the entry if it is none of these."""
    try:
        parts = urlsplit(f"//{entry.strip()}")
        port = parts.port
    except ValueError:
        port, parts = None, None
    if (
        parts is None
        or not parts.hostname
        or parts.username
        or parts.path
        or parts.query
        or port == 0
    ):
        raise ValueError(f"{entry!r} is not a host or host:port")
    return parts.hostname.lower(), port


def why_forbidden(address: IPAddress) -> str | None:
    """The kind of address `address` is if the service must not connect to it (`loopback`,
    `private`...); None if it is a public one. An IPv6 address that carries an IPv4 address is
    judged by that IPv4 address too, since that is where its packets go."""
    if isinstance(address, ipaddress.IPv6Address):
        if address in _LOCAL_NAT64:
            return "local-use NAT64"
        for embedded in _embedded_ipv4(address):
            if (why := _kind(embedded)) is not None:
                return why
    return _kind(address)


def _embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses `address` leads to: mapped (::ffff:a.b.c.d), compatible (::a.b.c.d),
    NAT64 (64:ff9b::a.b.c.d), 6to4 (2002:AABB:CCDD::) and Teredo (2001::/32: its server and
    its client)."""
    found = []
    if address.ipv4_mapped is not None:
        found.append(address.ipv4_mapped)
    # :: and ::1 are IPv6's own unspecified and loopback addresses, judged as such
    if int(address) > 1 and any(address in network for network in _EMBEDDING_IPV4):
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    if address.sixtofour is not None:
        found.append(address.sixtofour)
    if address.teredo is not None:
        found.extend(address.teredo)
    return found


def _kind(address: IPAddress) -> str | None:
    for refused, name in (
        (address.is_loopback, "loopback"),
        (address.is_link_local, "link-local"),
        (address.is_multicast, "multicast"),
        (address.is_unspecified, "unspecified"),
        (address.is_private, "private"),
        # shared (100.64/10), documentation, reserved and the like: routable by no one
        (not address.is_global, "not public"),
    ):
        if refused:
            return name
    return None


async def checked_address(
    target: Target,
    *,
    resolver: WebhookResolver,
    caller: str,
    within: float = RESOLVE_SECONDS,
) -> IPAddress:
    """The address to connect to for `target`: RefusedTarget unless it is https and every
    address its host resolves to (within `within` seconds, on `caller`'s share of `resolver`)
    is public. The first one is returned."""
    if target.scheme != "https":
        raise RefusedTarget("must be an https:// URL")
    addresses = await resolver.addresses(target.host, caller=caller, within=within)
    for address in addresses:
        if (why := why_forbidden(address)) is not None:
            if literal(target.host) is not None:
                raise RefusedTarget(f"host {target.host!r} is {described(why)}")
            # the kind, not the address: that is ours to know
            raise RefusedTarget(f"host {target.host!r} resolves to {described(why)}")
    return addresses[0]


def described(kind: str) -> str:
    """A kind of `why_forbidden` in a sentence: `a loopback address`."""
    if kind == "not public":
        return "an address that is not public"
    return f"{'an' if kind[0] in 'aeiou' else 'a'} {kind} address"


def literal(host: str) -> IPAddress | None:
    """`host` as the address it spells, if it is one (no lookup needed); else None."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None
