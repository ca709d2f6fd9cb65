"""Where alert webhooks may go: a destination policy checked when a rule is made and again at every send.

Without it an alert rule is a server-side request forgery tool: ``http://169.254.169.254/`` (a
cloud's metadata service), ``http://127.0.0.1:<port>/`` (whatever listens on the dashboard's own
machine) or any office-network address. By default only public (globally routable) addresses are
allowed; ``WATTSUP_DASHBOARD_WEBHOOK_ALLOWED_HOSTS`` lists the destinations otherwise allowed.

The check is repeated at send time on freshly resolved addresses, and the request then goes to the
very address that was checked (the URL's host is replaced by it; the ``Host`` header and TLS server
name stay the original name), so a name that resolves elsewhere later (DNS rebinding) gains nothing.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]

ALLOWED_SCHEMES = ("http", "https")


class DestinationRefused(ValueError):
    """The webhook URL is not an allowed destination; the text says why (without the URL's secrets)."""


def system_resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (IPv4 and IPv6), as text."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise DestinationRefused(f"the host {host!r} does not resolve") from exc
    return sorted({str(info[4][0]).split("%", 1)[0] for info in infos})


@dataclass(frozen=True)
class Destination:
    """A checked destination: the request URL pinned to a checked address, and what keeps the name."""

    url: httpx.URL
    headers: dict[str, str]
    extensions: dict[str, Any]


def _plain(address: IPAddress) -> IPAddress:
    """An IPv4-mapped IPv6 address (``::ffff:127.0.0.1``) as the IPv4 address it is."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class WebhookPolicy:
    """``allowed``: host names (``hooks.example.org``, ``*.example.org``), addresses or networks (CIDR)."""

    def __init__(self, allowed: list[str], resolve: Resolver = system_resolve) -> None:
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        self.names: list[str] = []
        for entry in (e.strip().lower() for e in allowed):
            if not entry:
                continue
            try:
                self.networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                self.names.append(entry.rstrip("."))
        self.resolve = resolve

    def _name_listed(self, host: str) -> bool:
        host = host.rstrip(".")
        return any(host == n or (n.startswith("*.") and host.endswith(n[1:])) for n in self.names)

    def _address_problem(self, host: str, address: IPAddress) -> str | None:
        address = _plain(address)
        if any(address in network for network in self.networks):
            return None
        restricted = bool(self.networks or self.names)
        if restricted and not self._name_listed(host):
            return "is not in WATTSUP_DASHBOARD_WEBHOOK_ALLOWED_HOSTS"
        if address.is_global and not address.is_multicast:
            return None
        if self._name_listed(host) and (address.is_private or address.is_loopback) and not (
                address.is_link_local or address.is_multicast or address.is_unspecified or address.is_reserved):
            return None  # an internal receiver the operator named
        kind = next(k for k, v in (("loopback", address.is_loopback), ("link-local", address.is_link_local),
                                   ("multicast", address.is_multicast), ("unspecified", address.is_unspecified),
                                   ("private", address.is_private), ("reserved", True)) if v)
        return (f"resolves to a {kind} address; list it in WATTSUP_DASHBOARD_WEBHOOK_ALLOWED_HOSTS to allow it"
                if host != str(address) else
                f"is a {kind} address; list it in WATTSUP_DASHBOARD_WEBHOOK_ALLOWED_HOSTS to allow it")

    def check(self, url: str) -> Destination:
        """The pinned destination for ``url``; raises :class:`DestinationRefused`."""
        try:
            parsed = httpx.URL(url)
            port = parsed.port or (443 if parsed.scheme == "https" else 80)
        except (httpx.InvalidURL, ValueError, TypeError) as exc:
            raise DestinationRefused("the webhook URL is not a valid URL") from exc
        if parsed.scheme not in ALLOWED_SCHEMES:
            raise DestinationRefused("the webhook URL must be http or https")
        host = parsed.host.lower()
        if not host:
            raise DestinationRefused("the webhook URL has no host")
        try:
            addresses = [ipaddress.ip_address(host)]
        except ValueError:
            addresses = [ipaddress.ip_address(a) for a in self.resolve(host, port)]
        if not addresses:
            raise DestinationRefused(f"the host {host!r} does not resolve")
        for address in addresses:  # every address must pass: the client could pick any of them
            problem = self._address_problem(host, address)
            if problem is not None:
                raise DestinationRefused(f"the webhook host {host!r} {problem}")
        pinned = parsed.copy_with(host=str(addresses[0]))
        headers = {"Host": parsed.netloc.decode("ascii").rsplit("@", 1)[-1]}
        extensions = {"sni_hostname": host} if parsed.scheme == "https" else {}
        return Destination(pinned, headers, extensions)
