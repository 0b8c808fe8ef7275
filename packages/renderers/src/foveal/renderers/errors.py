"""One family of typed errors for the multimodal contract (docs/contract.md section 10).

Every error names the offending field and value so a server can answer 4xx and a trainer can apply
its policy without parsing messages. `http_status` is the status a server maps the error to.
"""

from __future__ import annotations

from typing import Any, ClassVar


class ContractError(ValueError):
    """Base of every contract violation: `field` is the dotted name of what was wrong, `value` what it was."""

    http_status: ClassVar[int] = 422

    def __init__(self, field: str, value: Any, expected: str) -> None:
        self.field = field
        self.value = value
        self.expected = expected
        super().__init__(f"{field}: {expected} (got {_preview(value)})")

    def restated(self, field: str, expected: str | None = None) -> ContractError:
        """The same error under another field name (and expectation): its own class where the constructor takes
        these three arguments, else a plain ContractError (a subclass built otherwise)."""
        expected = self.expected if expected is None else expected
        try:
            return type(self)(field, self.value, expected)
        except TypeError:
            return ContractError(field, self.value, expected)


class BadRefEncoding(ContractError):
    """An `mmraw:` ref that is not urlsafe base64 of JSON."""

    http_status = 400


class BadEnvelope(ContractError):
    """A descriptor with the wrong kind/version/modality, a missing or extra field, or processed tensors."""

    http_status = 400


class UnknownFamily(ContractError):
    """A layout or renderer family Foveal has no adapter for."""

    http_status = 422


class FingerprintMismatch(ContractError):
    """The descriptor's layout fingerprint differs from the reader's processor settings."""

    http_status = 422


class HashMismatch(ContractError):
    """Stored bytes whose xxh3-128 differs from the descriptor's hash (tampered or corrupt)."""

    http_status = 422


class MissingAsset(ContractError):
    """The referenced file does not exist in the store."""

    http_status = 404


class DisallowedLocation(ContractError):
    """A location outside the allowed roots or schemes (path traversal, SSRF target, unknown scheme)."""

    http_status = 400


class ImageRejected(ContractError):
    """An image that fails the checks: format, byte size, pixel count (decompression bomb), aspect ratio."""

    http_status = 422


class PlaceholderMismatch(ContractError):
    """Placeholder tokens that disagree with the image layout or the recorded span."""

    http_status = 422


class OverlongSample(ContractError):
    """A multimodal sample longer than the limit: rejected, never truncated out of sync with its images."""

    http_status = 422

    def __init__(self, sample_id: str, length: int, limit: int) -> None:
        self.sample_id = sample_id
        self.length = length
        self.limit = limit
        super().__init__("sample", sample_id, f"length {length} exceeds limit {limit}; refusing to truncate")


def _preview(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
