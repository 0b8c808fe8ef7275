"""Prefilled prompts kept for reuse: an LRU keyed by the exact prompt ids and the images' hashes.

RL groups and retries send the same prompt again and again; a hit skips the prefill (vision tower
included). Only exact prompts are matched (no partial-prefix reuse). Entries belong to one weight
version, so the cache is cleared whenever weights change, and on `reset_prefix_cache`.
"""

from __future__ import annotations

from collections import OrderedDict

from foveal.trainer.serving.engine.runner import Prefill

PromptKey = tuple[tuple[int, ...], str]


class PromptCache:
    """Holds at most `capacity` prefills; used by the engine thread only."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[PromptKey, Prefill] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: PromptKey) -> Prefill | None:
        prefill = self._entries.get(key)
        if prefill is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return prefill

    def put(self, key: PromptKey, prefill: Prefill) -> None:
        """Keep `prefill` (callers never mutate it: admitting copies its rows into the batch)."""
        if self.capacity == 0:
            return
        self._entries[key] = prefill
        self._entries.move_to_end(key)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
