"""Guards for untrusted image locations: URL redaction, the address block list, pinned http(s) fetch."""

from foveal.renderers.security.fetch import FetchPolicy, fetch_http
from foveal.renderers.security.networks import DEFAULT_BLOCKED_NETWORKS, IPNetwork, blocking_network
from foveal.renderers.security.urls import redact_url

__all__ = ["DEFAULT_BLOCKED_NETWORKS", "FetchPolicy", "IPNetwork", "blocking_network", "fetch_http", "redact_url"]
