"""fcgi-lua's status and ping pages through nginx, with the shipped
nginx/fcgi-lua-status.conf (allow 127.0.0.1, deny all)."""

from __future__ import annotations

import http.client
import json
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

from prometheus_client.parser import text_string_to_metric_families

from .e2e_clients import http_request
from .e2e_stack import Logs, Stack


def test_ping_answers_pong(e2e: Stack) -> None:
    for _ in range(2):
        resp = http_request(e2e.urls["unix"], "/fcgi-ping")
        assert resp.status == 200
        assert resp.body == b"pong\n"


def test_status_json_and_prometheus_while_requests_sleep(e2e: Stack) -> None:
    base = e2e.urls["unix"]
    with ThreadPoolExecutor(20) as pool:
        sleeping = [pool.submit(http_request, base, "/sleep1s.lua") for _ in range(20)]
        status = http_request(base, "/fcgi-status")
        ping = http_request(base, "/fcgi-ping")
        assert not all(f.done() for f in sleeping)  # answered while they sleep
        assert all(f.result().status == 200 for f in sleeping)
    assert ping.body == b"pong\n"
    assert status.status == 200
    assert status.header("content-type") == "application/json"
    data = json.loads(status.body)
    assert data["pool"] == "fcgi-lua"
    assert data["total processes"] >= 1
    prom = http_request(base, "/fcgi-status?prometheus")
    assert (prom.header("content-type") or "").startswith("text/plain; version=0.0.4")
    names = {family.name for family in text_string_to_metric_families(prom.text)}
    assert {"fcgi_lua_requests", "fcgi_lua_request_duration_seconds"} <= names


def test_status_is_denied_to_other_addresses(e2e: Stack, logs: Logs) -> None:
    logs.allow("nginx", r"access forbidden by rule")
    url = urlsplit(e2e.urls["unix"])
    conn = http.client.HTTPConnection(
        url.hostname, url.port, timeout=5, source_address=("127.0.0.2", 0)
    )
    try:
        conn.request("GET", "/fcgi-status")
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 403
    finally:
        conn.close()
