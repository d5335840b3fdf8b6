"""libnetwork/events.py: subscribers by kind, in order; a failing one is logged and the others still run."""

from __future__ import annotations

import logging

import pytest

from libnetwork.errors import InvalidArgument
from libnetwork.events import ENDPOINT_JOINED, ENDPOINT_LEFT, NAMES_CHANGED, Event, Events
from libnetwork.model import Endpoint


def endpoint(name: str, network: str, sandbox: str) -> Endpoint:
    return Endpoint(id=name * 8, name=name, network_id=network, sandbox_id=sandbox, addresses=["10.0.0.2/24"])


def test_endpoints_changed_emits_the_kind_then_names_changed_with_networks_and_sandboxes():
    events, seen = Events(), []
    events.subscribe(ENDPOINT_LEFT, seen.append)
    events.subscribe(NAMES_CHANGED, seen.append)
    events.endpoints_changed(ENDPOINT_LEFT, [endpoint("a", "n1", "s1"), endpoint("b", "n2", "s2")])
    assert [e.kind for e in seen] == [ENDPOINT_LEFT, NAMES_CHANGED]
    assert seen[1].network_ids == {"n1", "n2"} and seen[1].sandbox_ids == {"s1", "s2"}
    assert [e.name for e in seen[1].endpoints] == ["a", "b"]


def test_nothing_is_emitted_without_endpoints_or_subscribers():
    events, seen = Events(), []
    events.endpoints_changed(ENDPOINT_JOINED, [endpoint("a", "n", "s")])  # nobody listens: no work
    events.subscribe(NAMES_CHANGED, seen.append)
    events.endpoints_changed(ENDPOINT_JOINED, [])
    assert seen == []


def test_a_failing_subscriber_is_logged_and_the_next_one_still_runs(caplog):
    events, seen = Events(), []

    def broken(event: Event) -> None:
        raise RuntimeError("disk full")

    events.subscribe(NAMES_CHANGED, broken)
    events.subscribe(NAMES_CHANGED, seen.append)
    with caplog.at_level(logging.ERROR, logger="libnetwork.events"):
        events.emit(Event(NAMES_CHANGED, None))
    assert len(seen) == 1 and seen[0].network_ids is None
    assert "subscriber of names-changed events failed" in caplog.text and "disk full" in caplog.text


def test_unsubscribe_and_unknown_kinds():
    events, seen = Events(), []
    unsubscribe = events.subscribe(NAMES_CHANGED, seen.append)
    unsubscribe()
    unsubscribe()  # twice is harmless
    events.emit(Event(NAMES_CHANGED, frozenset({"n"})))
    assert seen == []
    with pytest.raises(InvalidArgument, match="unknown event kind 'names'"):
        events.subscribe("names", seen.append)
