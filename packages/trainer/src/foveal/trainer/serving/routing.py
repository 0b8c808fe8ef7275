"""Which upstream server gets the next request: the router's pure policy, with no I/O.

A request with a session id sticks to the server that served its session before, as long as that server
is healthy, so a multi-turn conversation keeps hitting the server whose prefix cache holds it; when the
server goes down, the session is pinned again to the least-loaded healthy server. A request without a
session goes to the healthy server with the fewest requests in flight (ties: fewest ever sent, then
lowest index, so idle servers take turns). The table lives on the router's event loop, so it needs no locks.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection, Sequence
from dataclasses import dataclass


@dataclass
class Upstream:
    """One server as the router sees it; a server is down until a health check or a request proves otherwise."""

    url: str
    healthy: bool = False
    in_flight: int = 0
    dispatched: int = 0


class RoutingTable:
    """Health, load and session pins of the upstream servers."""

    def __init__(self, urls: Sequence[str], max_sessions: int = 100_000) -> None:
        if not urls:
            raise ValueError("upstreams: expected at least one server URL, got none")
        if max_sessions < 1:
            raise ValueError(f"max_sessions: expected >= 1, got {max_sessions}")
        self.upstreams = [Upstream(url) for url in urls]
        self.max_sessions = max_sessions
        self._pins: OrderedDict[str, int] = OrderedDict()  # least recently used first

    def choose(self, session_id: str | None = None, exclude: Collection[int] = ()) -> int | None:
        """The upstream for the next request (None when no healthy one is left outside `exclude`)."""
        if session_id is not None and (pinned := self._pins.get(session_id)) is not None:
            if self.upstreams[pinned].healthy and pinned not in exclude:
                self._pins.move_to_end(session_id)
                return pinned
        candidates = [i for i, upstream in enumerate(self.upstreams) if upstream.healthy and i not in exclude]
        if not candidates:
            return None
        index = min(candidates, key=lambda i: (self.upstreams[i].in_flight, self.upstreams[i].dispatched, i))
        if session_id is not None:
            self._pin(session_id, index)
        return index

    def start(self, index: int) -> None:
        """A request was sent to `index`."""
        self.upstreams[index].in_flight += 1
        self.upstreams[index].dispatched += 1

    def finish(self, index: int) -> None:
        """A request to `index` ended, with an answer or a failure."""
        if self.upstreams[index].in_flight <= 0:
            raise RuntimeError(f"upstream {index} finished a request it never started")
        self.upstreams[index].in_flight -= 1

    def mark_down(self, index: int) -> bool:
        """Take `index` out of rotation; True when it was healthy until now."""
        was_healthy, self.upstreams[index].healthy = self.upstreams[index].healthy, False
        return was_healthy

    def mark_up(self, index: int) -> bool:
        """Put `index` into rotation; True when it was down until now."""
        was_down, self.upstreams[index].healthy = not self.upstreams[index].healthy, True
        return was_down

    def healthy(self) -> list[int]:
        return [i for i, upstream in enumerate(self.upstreams) if upstream.healthy]

    def in_flight(self) -> int:
        return sum(upstream.in_flight for upstream in self.upstreams)

    def pinned(self, session_id: str) -> int | None:
        return self._pins.get(session_id)

    def _pin(self, session_id: str, index: int) -> None:
        self._pins[session_id] = index
        self._pins.move_to_end(session_id)
        while len(self._pins) > self.max_sessions:
            self._pins.popitem(last=False)
