"""The `[multimodal]` section: declared once per run and handed to every component that touches images."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from foveal.configs.errors import IncompatibleSettings, Problem

UrlScheme = Literal["file", "data", "http", "https"]
ImageFormat = Literal["PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF"]
MissingImagePolicy = Literal["error", "placeholder_zero_loss"]
DEFAULT_URL_SCHEMES: tuple[UrlScheme, ...] = ("file", "data")
DEFAULT_IMAGE_FORMATS: tuple[ImageFormat, ...] = ("PNG", "JPEG", "WEBP", "GIF", "BMP")


class MultimodalConfig(BaseModel):
    """Where images are stored, which locations may be read, and how large an image may be."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    offload_dir: Path | None = Field(
        default=None, description="Content-addressed image store; None means `<run dir>/assets`."
    )
    min_pixels: int | None = Field(
        default=None, gt=0, description="Override of the processor's min_pixels; None keeps the processor's."
    )
    max_pixels: int | None = Field(
        default=None, gt=0, description="Override of the processor's max_pixels; None keeps the processor's."
    )
    missing_image_policy: MissingImagePolicy = Field(
        default="error", description="At train time: fail on a missing/corrupt image, or zero its loss."
    )
    allowed_image_roots: list[Path] = Field(
        default_factory=list, description="Local folders images may be read from (the store is always allowed)."
    )
    allowed_url_schemes: list[UrlScheme] = Field(
        default_factory=lambda: list(DEFAULT_URL_SCHEMES), description="Schemes an image location may use."
    )
    allowed_image_formats: list[ImageFormat] = Field(
        default_factory=lambda: list(DEFAULT_IMAGE_FORMATS), description="Decoded formats accepted."
    )
    max_image_bytes: int = Field(default=32 * 2**20, gt=0, description="Largest encoded image accepted, in bytes.")
    max_image_pixels: int = Field(
        default=40_000_000, gt=0, description="Largest decoded width*height accepted (decompression-bomb cap)."
    )
    http_timeout_s: float = Field(default=10.0, gt=0, description="Timeout for fetching an http(s) image.")
    materialize_threads: int | None = Field(
        default=None, ge=1, description="Trainer threads materializing a step's images; None means min(8, CPUs)."
    )

    @model_validator(mode="after")
    def _check_pixel_bounds(self) -> MultimodalConfig:
        if self.min_pixels is not None and self.max_pixels is not None and self.min_pixels > self.max_pixels:
            raise IncompatibleSettings(
                [Problem("min_pixels", f"at most max_pixels ({self.max_pixels})", got=str(self.min_pixels))]
            )
        return self

    def store_dir(self, run_dir: Path) -> Path:
        """The store folder for a run: `offload_dir` if set, else `<run dir>/assets`."""
        return (self.offload_dir if self.offload_dir is not None else run_dir / "assets").resolve()
