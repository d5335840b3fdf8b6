"""Pure logic of the Docker API's core (no host, no socket): version prefixes, filters, chunked
bodies, IPAM requests, event matching. The clients' behaviour is the other tests' business."""

from __future__ import annotations

import io
import json

import pytest

from libnetwork.errors import InvalidArgument
from netctl.docker_api.events import Event, EventBus
from netctl.docker_api.filters import label_filter, parse_until, until_filter
from netctl.docker_api.http import ApiError, BodyReader, Request, frame
from netctl.docker_api.routing import Router, split_version
from netctl.docker_api.system import event_matches
from netctl.network_requests import pools_from_ipam, request_pools


def _request(query: dict[str, list[str]], body: bytes = b"", version: str = "1.47") -> Request:
    return Request(method="GET", path="/x", version=version, query=query, headers={}, sock=None,  # type: ignore[arg-type]
                   rfile=io.BytesIO(body), reader=BodyReader(io.BytesIO(body), len(body), False))


def test_version_prefixes():
    assert split_version("/v1.41/networks") == ("1.41", "/networks")
    assert split_version("/networks") == ("1.47", "/networks")
    assert split_version("/v1.24/_ping") == ("1.24", "/_ping")
    with pytest.raises(ApiError) as old:
        split_version("/v1.23/info")
    assert old.value.status == 400 and "too old" in old.value.message
    with pytest.raises(ApiError) as new:
        split_version("/v1.50/info")
    assert new.value.message == "client version 1.50 is too new. Maximum supported API version is 1.47"


def test_routes_404_and_405():
    router = Router(("system", "networks"))
    handler, groups = router.find("GET", "/networks/abc")
    assert groups == {"ref": "abc"}
    assert router.find("HEAD", "/_ping")[0] is router.find("GET", "/_ping")[0]
    with pytest.raises(ApiError) as missing:
        router.find("GET", "/nothing")
    assert (missing.value.status, missing.value.message) == (404, "page not found")
    with pytest.raises(ApiError) as method:
        router.find("PUT", "/networks/abc")
    assert method.value.status == 405


def test_filters_both_forms_and_bad_values():
    assert _request({"filters": [json.dumps({"label": {"a=b": True, "c": False}})]}).filters() == {"label": ["a=b"]}
    assert _request({"filters": [json.dumps({"name": ["x", "y"]})]}).filters() == {"name": ["x", "y"]}
    with pytest.raises(ApiError):
        _request({"filters": ["{not json"]}).filters()
    with pytest.raises(ApiError):
        _request({"filters": [json.dumps({"name": 3})]}).filters()
    assert _request({"force": ["1"], "n": ["5"]}).flag("force") and _request({"n": ["5"]}).int_arg("n") == 5
    with pytest.raises(ApiError):
        _request({"n": ["five"]}).int_arg("n")
    with pytest.raises(ApiError) as bad:
        _request({}, b"{oops").json()
    assert bad.value.message.startswith("malformed JSON")
    assert _request({}, b"[1]").json() == [1]
    with pytest.raises(ApiError):
        _request({}, b"[1]").json_object()


def test_chunked_body():
    raw = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\nNEXT"
    stream = io.BytesIO(raw)
    reader = BodyReader(stream, None, True)
    assert reader.read() == b"hello world" and reader.done
    assert stream.read() == b"NEXT"  # the next request on the connection is untouched
    with pytest.raises(ConnectionError):
        BodyReader(io.BytesIO(b"5\r\nhe"), None, True).read()
    with pytest.raises(ApiError):
        BodyReader(io.BytesIO(b"zz\r\n"), None, True).read()
    assert frame(1, b"ab") == b"\x01\x00\x00\x00\x00\x00\x00\x02ab"


def test_ipam_requests():
    pools = pools_from_ipam([{"Subnet": "10.1.0.0/24", "Gateway": "10.1.0.1", "IPRange": "10.1.0.128/25",
                              "AuxiliaryAddresses": {"a": "10.1.0.5"}}], "n")
    assert (pools[0].subnet, pools[0].gateway, pools[0].ip_range, pools[0].aux_addresses) == (
        "10.1.0.0/24", "10.1.0.1", "10.1.0.128/25", {"a": "10.1.0.5"})
    for bad, words in [
        ([{"Subnet": "10.1.0.0/24", "Gateway": "10.2.0.1"}], "outside subnet"),
        ([{"Subnet": "10.1.0.0/33"}], "not a valid CIDR"),
        ([{"Subnet": "10.1.0.0/24", "IPRange": "10.2.0.0/25"}], "outside subnet"),
        ([{"Gateway": "10.1.0.1"}], "need a Subnet"),
        ([{"Subnet": "10.1.0.0/24", "Extra": 1}], "'Extra' is not supported"),
        ({"Subnet": "x"}, "must be a list"),
    ]:
        with pytest.raises(InvalidArgument) as err:
            pools_from_ipam(bad, "n")
        assert words in err.value.message
    # the CLI's flags keep their own messages
    assert request_pools(["10.3.0.0/24"], ["10.3.0.9"], [], [])[0].gateway == "10.3.0.9"
    with pytest.raises(InvalidArgument) as cli:
        request_pools(["10.3.0.0/24"], ["10.4.0.9"], [], [])
    assert "--gateway 10.4.0.9 is outside every --subnet" in cli.value.message


def test_event_filters_and_bus():
    event = Event("network", "connect", "abc123", {"name": "front", "container": "c1", "team": "x"}, 1)
    assert event_matches(event, {"type": ["network"], "event": ["connect"], "network": ["front"]})
    assert event_matches(event, {"network": ["abc"], "label": ["team=x"]})
    assert not event_matches(event, {"type": ["container"]})
    assert not event_matches(event, {"container": ["front"]})
    assert not event_matches(event, {"label": ["team=y"]})
    bus = EventBus()
    bus.publish("volume", "create", "v1")
    sub, past = bus.subscribe(0)
    assert [e.actor_id for e in past] == ["v1"]
    bus.publish("volume", "destroy", "v1")
    got = sub.get(1)
    assert got is not None and got.action == "destroy"
    sub.close()


def test_label_and_until_filters():
    keep = label_filter({"label": ["a"], "label!": ["b=1"]})
    assert keep({"a": ""}) and not keep({"a": "", "b": "1"}) and not keep({})
    older = until_filter({"until": ["2020-01-01T00:00:00Z"]})
    assert older("2019-06-01T00:00:00Z") and not older("2021-01-01T00:00:00Z")
    assert parse_until("10") == 10.0
    with pytest.raises(ApiError):
        parse_until("yesterday")
