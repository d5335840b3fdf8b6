"""What the embedded server knows: per sandbox, the names it may resolve, and the answer to each query.

Pure: model objects in (sandboxes, endpoints, container DNS settings), an Index out. Sandboxes on the
same set of networks share one View (the names of every endpoint on those networks, never others),
so answers prepared for one are reused by all. A View prepares an answer the first time a (name,
type) is asked and keeps it until the next Index replaces the View: a query for a known name then
costs the question's label walk and two dict lookups (netctl/dns/wire.py says why by hand).

Names of an endpoint: its sandbox's name (for a CNI runtime's container, the name the runtime passed
in K8S_POD_NAME, as podman does), then its aliases; an endpoint of another host (overlay) carries
its sandbox's name itself. Each name answers bare and under DOMAIN (netctl.internal, the first
search domain of every container's resolv.conf). A name several endpoints hold answers with all of
their addresses, the order rotated on every query (DNS round-robin).
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from netctl.dns import wire

ROTATIONS = 16  # at most this many orders are prepared for a name held by more endpoints
DOMAIN_KEY = wire.wire_name(wire.DOMAIN)
NAME_LABEL = "K8S_POD_NAME"  # podman's CNI backend passes the container's name there


@dataclass
class Holder:
    names: list[str]
    v4: list[str]
    v6: list[str]


def _cycle(items: list[wire.Prepared]) -> Iterator[tuple[bytes, bytes, bytes]]:
    """The prepared orders of one answer, taken in turn (itertools.cycle: one C call per query)."""
    return itertools.cycle([(p.header_nord, p.header_rd, p.sections) for p in items])


class View:
    """The names visible from sandboxes on one set of networks, and the answers prepared so far."""

    def __init__(self, addresses: dict[bytes, tuple[str, list[str], list[str]]],
                 pointers: dict[bytes, tuple[str, str]]):
        self.addresses = addresses  # wire name -> (dotted name, v4 addresses, v6 addresses)
        self.pointers = pointers  # wire reverse name -> (dotted reverse name, target name)
        # The question as sent (name, type, class), lower-cased -> its answers in turn. Lower-casing
        # touches only letters: length bytes are <= 63 and the cached types and class (A 1, AAAA 28,
        # PTR 12, IN 1) have no letter bytes, nor does lower-casing ever produce them.
        self.cache: dict[bytes, Iterator[tuple[bytes, bytes, bytes]]] = {}

    def answer(self, data: bytes) -> bytes | str:
        """The response to `data`, wire.FORWARD (not ours: ask upstream) or wire.DROP (no answer).
        The first half is the hot path: the question's end found by wire.read_question's walk,
        inlined (a call and a Question object cost a third of a cached answer)."""
        size = len(data)
        if size < 17 or data[2] & 0xF8 or data[4] or data[5] != 1:  # a response, an opcode, not 1 question
            return self._odd(data)
        i = 12
        while True:
            length = data[i]
            if not length:
                break
            if length > 63:
                return self._odd(data)
            i += length + 1
            if i >= size or i >= 267:  # a name of 256 bytes or more (267: HEADER + wire.MAX_NAME)
                return self._odd(data)
        end = i + 5
        if end > size:
            return self._odd(data)
        hit = self.cache.get(data[12:end].lower())
        if hit is not None:
            nord, rd, sections = next(hit)
            return data[:2] + (rd if data[2] & 1 else nord) + data[12:end] + sections
        return self._odd(data)  # a name not prepared yet: read again, where Malformed is answered

    def _odd(self, data: bytes) -> bytes | str:
        """Everything the hot path does not answer from its cache: dropped, an error answer, or
        _miss's. Never raises on the asker's bytes (a raise would reach the server's loop)."""
        if len(data) < wire.HEADER or data[2] & 0x80:  # too short to answer, or a response: never answer
            return wire.DROP
        if data[2] & 0x78:  # opcode other than QUERY
            return wire.error(data, wire.NOTIMP)
        if data[4] or data[5] != 1:
            return wire.error(data, wire.FORMERR)
        try:
            question = wire.read_question(data)
        except wire.Malformed:
            return wire.error(data, wire.FORMERR)
        return self._miss(data, question)

    def _miss(self, data: bytes, q: wire.Question) -> bytes | str:
        if q.qclass != wire.CLASS_IN:
            return wire.error(data, wire.NOTIMP, q)
        if q.qtype in (wire.TYPE_AXFR, wire.TYPE_IXFR):
            return wire.error(data, wire.REFUSED, q)
        if q.qtype == wire.TYPE_ANY:
            return wire.error(data, wire.NOTIMP, q)
        known = self.addresses.get(q.key)
        if known is not None:
            name, v4, v6 = known
            if q.qtype in (wire.TYPE_A, wire.TYPE_AAAA):
                return self._cached(data, q, _rotations(name, q.qtype, v4 if q.qtype == wire.TYPE_A else v6))
            return _nodata(name, q.qtype).response(data, q.end)  # not cached: any of 65536 types
        pointer = self.pointers.get(q.key)
        if pointer is not None:
            reverse, target = pointer
            if q.qtype == wire.TYPE_PTR:
                return self._cached(data, q, [wire.prepare(reverse, q.qtype, wire.ptr_records(reverse, target))])
            return _nodata(reverse, q.qtype).response(data, q.end)
        # Our own domain, and single-label names (what a search list tries last; no resolver on the
        # Internet answers them): unknown here is unknown everywhere, so NXDOMAIN at once.
        if q.key.endswith(DOMAIN_KEY) or (len(q.key) > 1 and q.key[0] + 2 == len(q.key)):
            name = wire.dotted(q.key)
            if q.key == DOMAIN_KEY:
                return _nodata(name, q.qtype).response(data, q.end)
            return wire.prepare(name, q.qtype, [], rcode=wire.NXDOMAIN, authority=[wire.soa()]).response(data, q.end)
        return wire.FORWARD

    def _cached(self, data: bytes, q: wire.Question, items: list[wire.Prepared]) -> bytes:
        """Keep the answers of a known name (bounded: known names x A/AAAA/PTR), give the first."""
        turns = _cycle(items)
        self.cache[data[wire.HEADER:q.end].lower()] = turns
        nord, rd, sections = next(turns)
        return data[:2] + (rd if data[2] & 1 else nord) + data[wire.HEADER:q.end] + sections


def _rotations(name: str, qtype: int, addresses: list[str]) -> list[wire.Prepared]:
    if not addresses:
        return [_nodata(name, qtype)]
    count = min(len(addresses), ROTATIONS)
    step = len(addresses) / count
    orders = []
    for turn in range(count):
        start = int(turn * step)
        rotated = addresses[start:] + addresses[:start]
        orders.append(wire.prepare(name, qtype, wire.address_records(name, rotated, qtype)))
    return orders


def _nodata(name: str, qtype: int) -> wire.Prepared:
    return wire.prepare(name, qtype, [], authority=[wire.soa()])


@dataclass(frozen=True)
class Listener:
    """A sandbox the server listens in: its namespace, the view its queries see, where to forward."""

    sandbox_id: str
    netns_path: str
    networks: frozenset[str]
    upstreams: tuple[str, ...]  # the container's --dns servers; empty: the host's


@dataclass
class Index:
    views: dict[frozenset[str], View] = field(default_factory=dict)
    listeners: dict[str, Listener] = field(default_factory=dict)


def holders_by_network(sandboxes: Iterable, endpoints: Iterable) -> dict[str, list[Holder]]:
    """{network id: the named holders of addresses on it}, from local and remote endpoints."""
    by_id = {s.id: s for s in sandboxes}
    found: dict[str, list[Holder]] = defaultdict(list)
    for endpoint in endpoints:
        if endpoint.state == "deleting" or not endpoint.addresses:
            continue
        sandbox = by_id.get(endpoint.sandbox_id)
        if sandbox is None:
            primary = endpoint.name  # another host's endpoint: it carries its sandbox's name
        elif sandbox.external:
            primary = sandbox.labels.get(NAME_LABEL, "")
        else:
            primary = sandbox.name
        names = [n for n in dict.fromkeys([primary, *endpoint.aliases]) if n]
        v4 = [a.split("/")[0] for a in endpoint.addresses if ":" not in a]
        v6 = [a.split("/")[0] for a in endpoint.addresses if ":" in a]
        found[endpoint.network_id].append(Holder(names, v4, v6))
    return found


def build_view(holders: Iterable[Holder]) -> View:
    grouped: dict[bytes, tuple[str, list[str], list[str]]] = {}
    pointers: dict[bytes, tuple[str, str]] = {}
    for holder in holders:
        for name in holder.names:
            for qname in (name, f"{name}.{wire.DOMAIN}"):
                try:
                    key = wire.wire_name(qname)
                except (ValueError, UnicodeError):
                    continue  # not a DNS name (an alias with a space...): it only cannot be resolved
                entry = grouped.setdefault(key, (qname.lower(), [], []))
                entry[1].extend(a for a in holder.v4 if a not in entry[1])
                entry[2].extend(a for a in holder.v6 if a not in entry[2])
        if holder.names:
            for address in holder.v4 + holder.v6:
                reverse = wire.reverse_name(address)
                pointers.setdefault(wire.wire_name(reverse), (reverse, f"{holder.names[0]}.{wire.DOMAIN}"))
    return View(grouped, pointers)


def build(sandboxes: list, endpoints: list, remote: list, dns_servers: dict[str, tuple[str, ...]],
          usable: set[str] | None = None) -> Index:
    """The Index of this host: a Listener for every local sandbox with an endpoint, a View per set of
    networks. `remote`: other hosts' endpoints on global networks; `dns_servers`: {sandbox id: the
    container's own upstreams}; `usable`: sandboxes whose namespace can be entered (None: all)."""
    holders = holders_by_network(sandboxes, [*endpoints, *remote])
    networks_of: dict[str, set[str]] = defaultdict(set)
    for endpoint in endpoints:
        if endpoint.sandbox_id:
            networks_of[endpoint.sandbox_id].add(endpoint.network_id)
    index = Index()
    for sandbox in sandboxes:
        networks = frozenset(networks_of.get(sandbox.id, ()))
        if not networks or not sandbox.netns_path or (usable is not None and sandbox.id not in usable):
            continue
        if networks not in index.views:
            index.views[networks] = build_view(h for n in sorted(networks) for h in holders.get(n, []))
        index.listeners[sandbox.id] = Listener(sandbox.id, sandbox.netns_path, networks,
                                               dns_servers.get(sandbox.id, ()))
    return index
