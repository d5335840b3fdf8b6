"""Docker's list and prune filters that several object kinds share: label, label!, until."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime

from netctl.docker_api.http import ApiError


def labels_match(labels: dict[str, str], wanted: list[str]) -> bool:
    """Every `key` or `key=value` of `wanted` is among `labels`."""
    for label in wanted:
        key, sep, value = label.partition("=")
        if key not in labels or (sep and labels[key] != value):
            return False
    return True


def label_filter(filters: dict[str, list[str]]) -> Callable[[dict[str, str]], bool]:
    """Prune's `label` (must match all) and `label!` (must match none)."""
    wanted, unwanted = filters.get("label", []), filters.get("label!", [])

    def matches(labels: dict[str, str]) -> bool:
        if not labels_match(labels, wanted):
            return False
        return not any(labels_match(labels, [u]) for u in unwanted)

    return matches


def parse_until(text: str) -> float:
    """`until`: a Unix timestamp, an RFC 3339 date, or a Go duration like 10m / 24h (before now)."""
    try:
        return float(text)
    except ValueError:
        pass
    units = {"s": 1, "m": 60, "h": 3600}
    if text and text[-1] in units:
        try:
            return time.time() - float(text[:-1]) * units[text[-1]]
        except ValueError:
            pass
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise ApiError(400, f"invalid filter 'until={text}': use a timestamp, a date or a duration") from None


def until_filter(filters: dict[str, list[str]]) -> Callable[[str], bool]:
    """True for an object created (ISO date) before every `until` given."""
    limits = [parse_until(t) for t in filters.get("until", [])]

    def older(created: str) -> bool:
        if not limits:
            return True
        try:
            when = datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return True
        return all(when < limit for limit in limits)

    return older
