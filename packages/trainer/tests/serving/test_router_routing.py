"""The router's pure routing policy: sticky sessions, least in-flight, health, bounded session memory."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from foveal.trainer.serving.routing import RoutingTable

URLS = ("http://127.0.0.1:1", "http://127.0.0.1:2", "http://127.0.0.1:3")


def table(healthy: tuple[int, ...] = (0, 1, 2), max_sessions: int = 100) -> RoutingTable:
    routes = RoutingTable(URLS, max_sessions)
    for index in healthy:
        routes.mark_up(index)
    return routes


def test_servers_start_down_until_proven_healthy() -> None:
    assert RoutingTable(URLS).choose() is None


def test_least_in_flight_wins() -> None:
    routes = table()
    routes.start(0)
    routes.start(0)
    routes.start(1)
    assert routes.choose() == 2
    routes.start(2)
    routes.start(2)
    assert routes.choose() == 1


def test_idle_servers_take_turns() -> None:
    routes = table()
    order = []
    for _ in range(6):
        index = routes.choose()
        assert index is not None
        routes.start(index)
        routes.finish(index)
        order.append(index)
    assert order == [0, 1, 2, 0, 1, 2]


def test_a_session_sticks_to_its_server_even_when_busier() -> None:
    routes = table()
    first = routes.choose("conversation")
    assert first is not None
    for _ in range(5):
        routes.start(first)
    assert all(routes.choose("conversation") == first for _ in range(3))
    assert routes.choose() != first


def test_a_session_is_pinned_again_when_its_server_goes_down_and_stays_there() -> None:
    routes = table()
    first = routes.choose("conversation")
    assert first is not None
    routes.mark_down(first)
    second = routes.choose("conversation")
    assert second not in (None, first)
    routes.mark_up(first)
    assert routes.choose("conversation") == second == routes.pinned("conversation")


def test_excluded_and_down_servers_are_never_chosen() -> None:
    routes = table(healthy=(0, 2))
    assert routes.choose(exclude={0}) == 2
    assert routes.choose(exclude={0, 2}) is None
    pinned = routes.choose("s")
    assert routes.choose("s", exclude={pinned}) not in (None, pinned)


def test_session_memory_is_bounded_least_recent_first() -> None:
    routes = table(max_sessions=2)
    routes.choose("a")
    routes.choose("b")
    routes.choose("a")  # "a" is now the most recent
    routes.choose("c")
    assert routes.pinned("b") is None and routes.pinned("a") is not None and routes.pinned("c") is not None


def test_finish_without_start_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="never started"):
        table().finish(1)


def test_bad_tables_are_rejected() -> None:
    with pytest.raises(ValueError, match="upstreams"):
        RoutingTable(())
    with pytest.raises(ValueError, match="max_sessions"):
        RoutingTable(URLS, max_sessions=0)


def test_mark_up_and_down_report_changes() -> None:
    routes = table(healthy=())
    assert routes.mark_up(1) and not routes.mark_up(1)
    assert routes.mark_down(1) and not routes.mark_down(1)


Op = tuple[str, int, str | None]
OPS = st.lists(
    st.tuples(
        st.sampled_from(["choose", "finish", "down", "up"]),
        st.integers(min_value=0, max_value=2),
        st.one_of(st.none(), st.sampled_from(["s1", "s2", "s3", "s4"])),
    ),
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(OPS, st.sets(st.integers(min_value=0, max_value=2), max_size=2))
def test_routing_invariants_hold_for_any_sequence(ops: list[Op], exclude: set[int]) -> None:
    """Chosen servers are healthy and not excluded; without a session the least loaded one is chosen; a
    healthy pinned server keeps its session; in-flight counts match starts minus finishes."""
    routes = table(max_sessions=3)
    started = [0, 0, 0]
    for op, index, session in ops:
        if op == "down":
            routes.mark_down(index)
        elif op == "up":
            routes.mark_up(index)
        elif op == "finish" and started[index] > 0:
            routes.finish(index)
            started[index] -= 1
        elif op == "choose":
            pinned = routes.pinned(session) if session else None
            chosen = routes.choose(session, exclude)
            candidates = [i for i in routes.healthy() if i not in exclude]
            if not candidates:
                assert chosen is None
                continue
            assert chosen in candidates
            if pinned is not None and pinned in candidates:
                assert chosen == pinned
            else:
                loads = [routes.upstreams[i].in_flight for i in candidates]
                assert routes.upstreams[chosen].in_flight == min(loads)
            if session is not None:
                assert routes.pinned(session) == chosen
            routes.start(chosen)
            started[chosen] += 1
        assert [upstream.in_flight for upstream in routes.upstreams] == started
        assert routes.in_flight() == sum(started)
