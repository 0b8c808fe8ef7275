"""Parsing and redacting http(s) image URLs.

Every error message that quotes a URL goes through `redact_url`: credentials in the userinfo and the
query (signed-URL tokens live there) must never reach a log.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit, urlunsplit

from foveal.renderers.errors import DisallowedLocation

HTTP_SCHEMES = frozenset({"http", "https"})
_SAFE_URL_CHARS = re.compile(r"[\x21-\x7e]+")
_HOST_CHARS = re.compile(r"[a-z0-9.\-]+|[0-9a-f:.]+")


@dataclass(frozen=True)
class HttpTarget:
    """One checked http(s) request target: where to connect and what to ask for."""

    scheme: str
    host: str
    port: int
    request_path: str
    redacted: str


def redact_url(url: str) -> str:
    """The URL with userinfo replaced by `***@` and the query by `***`; safe to put in an error."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<unparseable url>"
    if ":" in host:
        host = f"[{host}]"
    netloc = ("***@" if "@" in parts.netloc else "") + host + (f":{port}" if port is not None else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "***" if parts.query else "", ""))


def parse_http_url(url: str, allowed_schemes: frozenset[str]) -> HttpTarget:
    """Check an http(s) URL's shape: allowed scheme, printable ASCII, a host, no credentials."""
    redacted = redact_url(url)
    if not _SAFE_URL_CHARS.fullmatch(url):
        raise DisallowedLocation("location", redacted, "a URL of printable ASCII without spaces")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise DisallowedLocation("location", redacted, "a well-formed URL") from None
    scheme = parts.scheme.lower()
    if scheme not in HTTP_SCHEMES or scheme not in allowed_schemes:
        raise DisallowedLocation("location.scheme", scheme, f"one of {sorted(HTTP_SCHEMES & allowed_schemes)}")
    _check_authority(parts, redacted)
    default_port = 443 if scheme == "https" else 80
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return HttpTarget(scheme, parts.hostname or "", port or default_port, path, redacted)


def _check_authority(parts: SplitResult, redacted: str) -> None:
    if parts.username is not None or parts.password is not None:
        raise DisallowedLocation("location.userinfo", redacted, "a URL without credentials")
    if not parts.hostname or not _HOST_CHARS.fullmatch(parts.hostname):
        raise DisallowedLocation("location.host", redacted, "an ASCII host name or IP literal")
