"""Which callback URLs the service may call: no SSRF.

A callback URL must be `https://` to a host whose every address is public: loopback, private,
link-local (the cloud metadata service at 169.254.169.254), multicast, unspecified and the
other ranges that are not globally routable are refused. The host is resolved when a request
is accepted (its 422 names `callback_url`) and again before each delivery, since DNS may change
in between; the delivery then connects to the address that was checked, never to a name
resolved a second time. WEBHOOK_ALLOW_HOSTS names the exceptions (`host` or `host:port`), for
development and tests: those may be `http://` and any address.

Resolution runs on the event loop's resolver (a thread), within a deadline, so the accept path
never blocks on DNS; a request without a callback_url never gets here.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_URL_CHARS = 2048
RESOLVE_SECONDS = 2.0  # what a lookup may take at accept time and before each delivery
_DEFAULT_PORTS = {"http": 80, "https": 443}


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
    if parts is None or not parts.hostname or parts.username or parts.path or parts.query:
        raise ValueError(f"{entry!r} is not a host or host:port")
    return parts.hostname.lower(), port


def why_forbidden(address: IPAddress) -> str | None:
    """Why the service must not connect to `address`; None if it is a public one."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
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
            return f"{name} address {address}"
    return None


async def checked_address(target: Target, *, within: float = RESOLVE_SECONDS) -> IPAddress:
    """The address to connect to for `target`: RefusedTarget unless it is https and every
    address its host resolves to (within `within` seconds) is public. The first one is returned."""
    if target.scheme != "https":
        raise RefusedTarget("must be an https:// URL")
    addresses = await resolve(target.host, target.port, within=within)
    for address in addresses:
        if (why := why_forbidden(address)) is not None:
            raise RefusedTarget(f"host {target.host!r} resolves to a {why}")
    return addresses[0]


async def resolve(host: str, port: int, *, within: float) -> list[IPAddress]:
    """Every address of `host`, by the system's resolver (as a connection would find them),
    off the event loop and within `within` seconds; RefusedTarget if there is none in time."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        async with asyncio.timeout(within):
            found = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )
    except TimeoutError:
        raise RefusedTarget(f"host {host!r} did not resolve within {within:g} s") from None
    except (OSError, UnicodeError) as exc:
        raise RefusedTarget(f"host {host!r} does not resolve ({exc})") from None
    addresses: list[IPAddress] = []
    for *_, sockaddr in found:
        # an IPv6 scope id (fe80::1%eth0) is link-local anyway: the part before % decides
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise RefusedTarget(f"host {host!r} has no address")
    return addresses
