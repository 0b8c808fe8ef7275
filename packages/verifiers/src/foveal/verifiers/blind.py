"""Grey images in place of real ones, for blind controls (`[rl].images`, `[rl].warmup_images`, `[eval].images`).

A blind run must differ from the seeing run in what the pixels say and in nothing else: the same prompts,
the same image sizes, hence the same placeholder tokens, layout and grid, down to the token ids. So the swap
happens where every image enters a run, in the image store: `BlankingImageStore.put` checks the image as
`put` would (allowed locations, byte and pixel caps, the caller's layout check) without storing it, then
stores and hands out a uniform grey image of the same upright size. The renderer, the server and the trainer
then only ever meet the grey image, by its own hash.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PIL import Image

from foveal.configs.jobs import ImagesSeen
from foveal.configs.multimodal import MultimodalConfig
from foveal.renderers.store import ImageSource, ImageStore, StoredImage

BLANK_RGB = (128, 128, 128)


class BlankingImageStore(ImageStore):
    """An image store whose every `put` returns a grey image of the stored image's size."""

    def put(self, source: ImageSource, accept: Callable[[int, int], object] | None = None) -> StoredImage:
        seen = self.checked(source, accept)
        return super().put(Image.new("RGB", (seen.width, seen.height), BLANK_RGB))


def run_image_store(multimodal: MultimodalConfig, run_dir: Path, images: ImagesSeen = "real") -> ImageStore:
    """The run's image store (`ImageStore.from_config`), blanking every image when `images` is "blank"."""
    kind = BlankingImageStore if images == "blank" else ImageStore
    return kind.from_config(multimodal, run_dir)
