"""Redaction of credentials in anything a client or router logs or raises.

Inference URLs may carry `user:pass@` (a proxy in front of a server) and requests carry a bearer token.
Every log line and exception message of the client and the router goes through `redact_text`, so a
traceback pasted into an issue never holds a secret.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from foveal.renderers.security.urls import redact_url

__all__ = ["REDACTED", "redact_text", "redact_url"]

REDACTED = "***"
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)[^/?#\s@]*@")
_BEARER = re.compile(r"(?P<scheme>\bBearer\s+)[^\s\"',;]+", re.IGNORECASE)


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with every given secret, every URL userinfo and every bearer credential replaced by `***`."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    text = _USERINFO.sub(rf"\g<scheme>{REDACTED}@", text)
    return _BEARER.sub(rf"\g<scheme>{REDACTED}", text)
