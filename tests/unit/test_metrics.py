"""metrics.py, status.py and accesslog.py in one process: counting,
flushing, the formats of the status page, access log lines."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from fcgi_lua import metrics, status
from fcgi_lua.accesslog import AccessLog, escape


@pytest.fixture
def recorder(tmp_path: Path) -> Iterator[metrics.Recorder]:
    metrics.setup(str(tmp_path / "metrics"))
    try:
        started = metrics.start_worker("/srv/www")
        assert started is not None
        yield started
    finally:
        metrics.stop_worker()
        metrics.teardown()


def body(response: bytes) -> str:
    return response.partition(b"\r\n\r\n")[2].decode()


def samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def test_every_call_is_a_no_op_when_metrics_are_off() -> None:
    assert metrics.recorder() is None and not metrics.enabled()
    metrics.request_finished("/srv/www/a.lua", 200, 0.01)
    metrics.lua_error("/srv/www/a.lua")
    metrics.limit_kill("timeout", "/srv/www/a.lua")
    metrics.slow_request("/srv/www/a.lua")
    metrics.worker_restart("crash")
    metrics.set_lua_memory(1)
    metrics.set_shdict_usage("cache", 1, 2)
    metrics.process_dead(1)
    metrics.flush()
    assert metrics.collect() == []


def test_flushed_histogram_equals_observe(recorder: metrics.Recorder) -> None:
    durations = [0.0004, 0.001, 0.003, 0.2, 0.2, 7.0, 100.0]
    for seconds in durations:
        recorder.request_finished("/srv/www/a.lua", 200, seconds)
    recorder.flush()
    ours = samples(body(status.status_response("prometheus", "", pool="p", in_flight=0, served=0)))
    reference = CollectorRegistry()
    histogram = Histogram(
        "fcgi_lua_request_duration_seconds",
        "x",
        ["script"],
        buckets=metrics.BUCKETS,
        registry=reference,
    )
    for seconds in durations:
        histogram.labels("/a.lua").observe(seconds)
    expected = samples(generate_latest(reference).decode())
    for name in ("_bucket", "_count", "_sum"):
        key = "fcgi_lua_request_duration_seconds" + name
        assert sorted(ours[key], key=repr) == pytest.approx(sorted(expected[key], key=repr))


def test_labels_are_relative_to_root_and_bounded(
    recorder: metrics.Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(metrics, "MAX_SCRIPTS", 2)
    for name in ("a", "b", "c", "d"):
        metrics.request_finished(f"/srv/www/{name}.lua", 200, 0.001)
    metrics.request_finished("", 404, 0.001)
    metrics.flush()
    got = samples(body(status.status_response("prometheus", "", pool="p", in_flight=0, served=0)))
    scripts = {labels["script"]: value for labels, value in got["fcgi_lua_requests_total"]}
    assert scripts == {"/a.lua": 1, "/b.lua": 1, "other": 2, "": 1}


def test_status_json_has_php_fpm_fields(recorder: metrics.Recorder) -> None:
    metrics.request_finished("/srv/www/a.lua", 200, 0.01)
    metrics.request_finished("/srv/www/a.lua", 500, 0.01)
    metrics.lua_error("/srv/www/a.lua")
    metrics.limit_kill("instructions", "/srv/www/a.lua")
    metrics.slow_request("/srv/www/a.lua")
    metrics.worker_restart("hang")
    metrics.set_lua_memory(4096)
    metrics.set_shdict_usage("cache", 100, 1000)
    page = status.status_response("", "", pool="www", in_flight=3, served=7)
    assert page.startswith(b"Status: 200 OK\r\nContent-Type: application/json\r\n")
    data = json.loads(body(page))
    for key in ("pool", "start time", "start since", "accepted conn", "idle processes"):
        assert key in data
    assert data["pool"] == "www"
    assert data["accepted conn"] == 2
    assert data["active processes"] == 1 and data["total processes"] == 1
    assert data["active requests"] == 3
    assert data["slow requests"] == 1
    assert data["lua errors"] == 1
    assert data["limit kills"] == {"instructions": 1}
    assert data["worker restarts"] == {"hang": 1}
    assert data["requests by status"] == {"200": 1, "500": 1}
    assert data["shared dicts"] == {"cache": {"used": 100, "capacity": 1000}}
    (process,) = data["processes"]
    assert process["requests"] == 7 and process["lua memory"] == 4096
    assert 1024 * 1024 < process["rss"] < 4 * 1024**3  # this process's, from /proc
    assert process["state"] == "Running"


def test_status_names_the_slowest_scripts(recorder: metrics.Recorder) -> None:
    for seconds in (0.5, 1.5):
        metrics.request_finished("/srv/www/slow.lua", 200, seconds)
    metrics.request_finished("/srv/www/fast.lua", 200, 0.002)
    data = json.loads(body(status.status_response("", "", pool="p", in_flight=0, served=3)))
    assert data["slowest scripts"] == [
        {"script": "/slow.lua", "requests": 2, "mean seconds": 1.0},
        {"script": "/fast.lua", "requests": 1, "mean seconds": 0.002},
    ]


def test_status_html_for_a_browser(recorder: metrics.Recorder) -> None:
    metrics.request_finished("/srv/www/<b>.lua", 200, 0.25)
    metrics.set_lua_memory(3 * 1024 * 1024)
    page = status.status_response("html", "text/html", pool="p", in_flight=0, served=1)
    assert page.startswith(b"Status: 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n")
    text = body(page)
    assert "<h1>fcgi-lua status</h1>" in text
    assert "<td>3.0 MB</td>" in text  # memory in MB, not bytes
    assert "<td>/&lt;b&gt;.lua</td><td>1</td><td>250.0 ms</td>" in text  # escaped
    assert "<td>up for</td><td>0 s</td>" in text or "<td>up for</td><td>1 s</td>" in text


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(0, "0 s"), (59, "59 s"), (61, "1 min 1 s"), (3 * 3600 + 120, "3 h 2 min"), (9e4, "1 d 1 h")],
)
def test_status_durations_read_as_units(seconds: int, shown: str) -> None:
    assert status._duration(seconds) == shown


def test_openmetrics_and_head(recorder: metrics.Recorder) -> None:
    metrics.request_finished("/srv/www/a.lua", 200, 0.01)
    accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
    page = status.status_response("", accept, pool="p", in_flight=0, served=0)
    assert b"Content-Type: application/openmetrics-text" in page
    names = {f.name for f in openmetrics_families(body(page))}
    assert "fcgi_lua_requests" in names
    head = status.status_response("json", "", pool="p", in_flight=0, served=0, head=True)
    assert head.endswith(b"\r\n\r\n") and b"Content-Length: " in head


@pytest.mark.parametrize(
    ("query", "accept", "expected"),
    [
        ("", "", "json"),
        ("json", "application/openmetrics-text", "json"),
        ("prometheus", "", "prometheus"),
        ("x=1&openmetrics", "", "openmetrics"),
        ("", "text/plain;version=0.0.4", "prometheus"),
        ("", "application/openmetrics-text; version=1.0.0", "openmetrics"),
        ("", "text/html", "json"),
        ("html", "", "html"),
    ],
)
def test_choose_format(query: str, accept: str, expected: str) -> None:
    assert status.choose_format(query, accept) == expected


def test_ping() -> None:
    assert status.ping_response("pong").endswith(b"\r\n\r\npong\n")


def test_access_log_line_escapes_client_bytes(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    log = AccessLog(str(path))
    try:
        log.write(
            {
                b"REMOTE_ADDR": b"10.0.0.1",
                b"REQUEST_METHOD": b"GET",
                b"REQUEST_URI": b'/a.lua?q="x"\n\xff',
                b"SERVER_PROTOCOL": b"HTTP/1.1",
            },
            200,
            123,
            0.0042,
            "/srv/www/a.lua",
        )
        log.write({}, 404, 0, 0.0, "")
        log.flush()
    finally:
        log.close()
    first, second = path.read_text().splitlines()
    assert first.startswith("10.0.0.1 - - [")
    assert first.endswith(
        '] "GET /a.lua?q=\\x22x\\x22\\x0A\\xFF HTTP/1.1" 200 123 0.004 "/srv/www/a.lua"'
    )
    assert second.endswith('] "- - -" 404 0 0.000 "-"')
    assert escape(b"plain") == "plain"
