"""Our progress display owns stderr: transformers' own bars ("Loading weights", "Writing model shards") are
switched off while a model is loaded or saved, and put back as they were afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from transformers.utils import logging as transformers_logging


@contextmanager
def quiet_progress() -> Iterator[None]:
    """Within the block transformers draws no progress bars; a caller that had them on gets them back."""
    enabled = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            transformers_logging.enable_progress_bar()
