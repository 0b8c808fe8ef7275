"""Which addresses an image fetch may connect to: public unicast only, judged after DNS resolution.

The block list is data, not code, so a test can relax it (e.g. allow loopback to fetch from a server it
started) while the default refuses every non-public range. Addresses that embed an IPv4 address
(IPv4-mapped, 6to4, NAT64) are judged by the embedded address too: `::ffff:127.0.0.1` is loopback.
"""

from __future__ import annotations

import socket
import threading
from typing import Any
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

from foveal.renderers.errors import DisallowedLocation, MissingAsset

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

DEFAULT_BLOCKED_NETWORKS: tuple[IPNetwork, ...] = tuple(
    ip_network(cidr)
    for cidr in (
        "0.0.0.0/8",  # "this network", includes the unspecified 0.0.0.0
        "10.0.0.0/8",  # RFC 1918 private
        "100.64.0.0/10",  # carrier-grade NAT
        "127.0.0.0/8",  # loopback
        "169.254.0.0/16",  # link-local, includes cloud metadata 169.254.169.254
        "172.16.0.0/12",  # RFC 1918 private
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",  # documentation
        "192.88.99.0/24",  # 6to4 relay anycast (deprecated)
        "192.168.0.0/16",  # RFC 1918 private
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",  # documentation
        "203.0.113.0/24",  # documentation
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, includes broadcast 255.255.255.255
        "::/96",  # unspecified, loopback ::1, deprecated IPv4-compatible
        "64:ff9b:1::/48",  # local-use NAT64
        "100::/64",  # discard-only
        "2001::/23",  # IETF protocol assignments, includes Teredo
        "2001:db8::/32",  # documentation
        "3fff::/20",  # documentation
        "fc00::/7",  # unique local (ULA), includes fd00::/8
        "fe80::/10",  # link-local
        "fec0::/10",  # site-local (deprecated)
        "ff00::/8",  # multicast
    )
)
_NAT64 = ip_network("64:ff9b::/96")


def embedded_ipv4(address: IPAddress) -> IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, 6to4, NAT64), if any."""
    if not isinstance(address, IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def blocking_network(address: IPAddress, blocked: tuple[IPNetwork, ...]) -> IPNetwork | None:
    """The blocked network containing the address or the IPv4 address it embeds, else None."""
    candidates = [address, embedded_ipv4(address)]
    for candidate in candidates:
        for network in blocked:
            if candidate is not None and candidate.version == network.version and candidate in network:
                return network
    return None


def _getaddrinfo(host: str, port: int, timeout_s: float | None) -> list[Any]:
    """`socket.getaddrinfo`, given up on after `timeout_s`: the resolver has no timeout of its own, so it runs
    on a daemon thread that is left to finish (or hang) alone once the caller stops waiting."""
    if timeout_s is None:
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    outcome: dict[str, Any] = {}
    done = threading.Event()

    def lookup() -> None:
        try:
            outcome["infos"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except Exception as error:  # noqa: BLE001 - handed to the caller below, whatever it is
            outcome["error"] = error
        finally:
            done.set()

    threading.Thread(target=lookup, name="foveal-dns", daemon=True).start()
    if not done.wait(max(timeout_s, 0.0)):
        raise MissingAsset("location.host", host, "a host name that resolves within http_timeout_s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["infos"]


def resolve_public(
    host: str, port: int, blocked: tuple[IPNetwork, ...], timeout_s: float | None = None
) -> IPAddress:
    """Resolve `host` and return the address to connect to; every resolved address must be allowed.

    Refusing when any address is blocked (not just the first) closes the trick of a name that resolves
    to one public and one private address and lets the connector pick. With `timeout_s` the lookup itself
    is bounded (the fetch's deadline covers DNS too).
    """
    try:
        infos = _getaddrinfo(host, port, timeout_s)
    except MissingAsset:
        raise  # the lookup outlived the deadline
    except (OSError, UnicodeError, ValueError):
        raise MissingAsset("location.host", host, "a host name that resolves") from None
    addresses = list(dict.fromkeys(ip_address(info[4][0]) for info in infos))
    for address in addresses:
        network = blocking_network(address, blocked)
        if network is not None:
            raise DisallowedLocation("location.host", f"{host} -> {address}", f"a public address (not in {network})")
    if not addresses:
        raise MissingAsset("location.host", host, "a host name that resolves")
    return addresses[0]
