"""netctl/docker_api/http1.py: the Docker API socket's request heads and reply heads (pure logic).

The server around it is tested end to end with real clients in tests/docker_api."""

from __future__ import annotations

import io

import pytest

from netctl.docker_api import http1


def head_of(raw: bytes) -> http1.RequestHead | None:
    return http1.read_head(io.BufferedReader(io.BytesIO(raw)))  # type: ignore[arg-type]


def refusal(raw: bytes) -> tuple[int, str]:
    with pytest.raises(http1.BadRequest) as caught:
        head_of(raw)
    return caught.value.status, caught.value.message


def test_a_docker_cli_request_head():
    head = head_of(b"POST /v1.47/networks/create HTTP/1.1\r\nHost: api.moby.localhost\r\n"
                   b"User-Agent: Docker-Client/28.2.2 (linux)\r\nContent-Length: 17\r\n"
                   b"Content-Type: application/json\r\n\r\n{\"Name\":\"x\"}")
    assert head is not None
    assert (head.method, head.target, head.version) == ("POST", "/v1.47/networks/create", "HTTP/1.1")
    assert head.headers.get("content-length") == "17" and head.headers.get("CONTENT-TYPE") == "application/json"
    assert head.headers.get("X-Registry-Auth") is None and head.headers.get("X-Registry-Auth", "") == ""
    assert "host" in head.headers and "Expect" not in head.headers
    assert head.keep_alive and not head.expects_continue


def test_the_first_field_of_a_name_wins_and_values_are_trimmed():
    head = head_of(b"GET / HTTP/1.1\r\nX-A:  one \r\nx-a: two\r\n\r\n")
    assert head is not None and head.headers.get("X-A") == "one"


@pytest.mark.parametrize("version, connection, keep", [
    ("HTTP/1.1", "", True), ("HTTP/1.1", "Connection: close\r\n", False),
    ("HTTP/1.1", "Connection: Keep-Alive\r\n", True), ("HTTP/1.0", "", False),
    ("HTTP/1.0", "Connection: keep-alive\r\n", True), ("HTTP/1.0", "Connection: close\r\n", False),
])
def test_keep_alive_follows_the_version_and_the_connection_field(version, connection, keep):
    head = head_of(f"GET /_ping {version}\r\n{connection}\r\n".encode())
    assert head is not None and head.keep_alive is keep


def test_expect_100_continue_only_from_http_1_1():
    head = head_of(b"POST /images/load HTTP/1.1\r\nExpect: 100-Continue\r\n\r\n")
    assert head is not None and head.expects_continue
    head = head_of(b"POST /images/load HTTP/1.0\r\nExpect: 100-continue\r\n\r\n")
    assert head is not None and not head.expects_continue


def test_a_closed_connection_is_none_and_empty_lines_before_a_request_are_skipped():
    assert head_of(b"") is None
    assert head_of(b"\r\n\r\n") is None
    head = head_of(b"\r\nGET /_ping HTTP/1.1\r\n\r\n")
    assert head is not None and head.target == "/_ping"


def test_a_head_cut_short_is_a_connection_error():
    with pytest.raises(ConnectionError):
        head_of(b"GET /_ping HTTP/1.1\r\nHost: x\r\n")


def test_limits_and_syntax_are_refused_with_http_servers_statuses():
    assert refusal(b"GET /" + b"a" * http1.MAX_LINE + b" HTTP/1.1\r\n\r\n")[0] == 414
    assert refusal(b"GET / HTTP/1.1\r\nX: " + b"a" * http1.MAX_LINE + b"\r\n\r\n")[0] == 431
    many = b"".join(b"X-%d: 1\r\n" % i for i in range(http1.MAX_HEADERS + 1))
    assert refusal(b"GET / HTTP/1.1\r\n" + many + b"\r\n") == (431, "more than 100 header fields")
    assert refusal(b"GET /\r\n\r\n") == (400, "bad request line 'GET /'")
    assert refusal(b"GET / HTTP/1.1 extra\r\n\r\n")[0] == 400
    assert refusal(b"GET / FTP/1.1\r\n\r\n") == (400, "bad request version 'FTP/1.1'")
    assert refusal(b"GET / HTTP/2.0\r\n\r\n") == (505, "HTTP version 2.0 is not supported")
    assert refusal(b"GET / HTTP/1.1\r\nno colon here\r\n\r\n")[0] == 400
    assert refusal(b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n")[0] == 400
    assert refusal(b"GET / HTTP/1.1\r\n folded: x\r\n\r\n")[0] == 400


def test_exactly_the_limits_are_served():
    fields = b"".join(b"X-%d: 1\r\n" % i for i in range(http1.MAX_HEADERS))
    head = head_of(b"GET / HTTP/1.1\r\n" + fields + b"\r\n")
    assert head is not None and head.headers.get("x-99") == "1"


def test_a_reply_head():
    head = http1.reply_head(201, [("Api-Version", "1.47"), ("Content-Length", "2")])
    assert head == b"HTTP/1.1 201 Created\r\nApi-Version: 1.47\r\nContent-Length: 2\r\n\r\n"
    assert http1.reply_head(599, []) == b"HTTP/1.1 599 \r\n\r\n"
    assert http1.http_date().endswith(" GMT")
