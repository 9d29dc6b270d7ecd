"""Three fcgi-lua hosts behind one nginx, each in a network namespace of its
own, Redis in another (tests/hosts/cluster.py), under wrk load: requests
spread across the hosts; a host killed, or cut off by its link going down,
costs no GET (`fastcgi_next_upstream error timeout`) and at most the POSTs
in flight, counted; the host comes back and takes load again; state kept in
Redis reads the same whichever host serves it.  docs/scaling.md quotes what
this measures.

Skips, with the reason, only where `ip netns` is not permitted (not root, a
container without CAP_SYS_ADMIN); under CI that fails instead."""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .cluster import FAIL_TIMEOUT, Cluster, LogLine, netns_problem, program, spread

pytestmark = pytest.mark.e2e

# wrk's load: GETs on many connections, POSTs (non-idempotent: nginx never
# sends one twice) on a few.  Each wrk connection has one request in flight
# at most, so POST_CONNECTIONS bounds the POSTs a lost host can take down.
GET_CONNECTIONS = 16
POST_CONNECTIONS = 4
LOAD_SECONDS = 6.0
EVENT_AT = 2.0  # s into the load: the host is killed, or its link goes down
POST_BODY = "x" * 1000


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    problem = netns_problem()
    if problem is not None:
        if os.environ.get("CI"):
            pytest.fail(f"{problem}: CI runs as root", pytrace=False)
        pytest.skip(problem)
    for name in ("nginx", "redis-server", "wrk"):
        try:
            program(name)
        except RuntimeError as error:
            if os.environ.get("CI"):
                pytest.fail(f"{error}: scripts/test installs it", pytrace=False)
            pytest.skip(str(error))
    made = Cluster(tmp_path_factory.mktemp("hosts"))
    try:
        made.start()
        yield made
    finally:
        made.stop()


@pytest.fixture
def post_script(tmp_path: Path) -> Path:
    path = tmp_path / "post.lua"
    path.write_text(
        'wrk.method = "POST"\n'
        f'wrk.body = "{POST_BODY}"\n'
        'wrk.headers["Content-Type"] = "application/octet-stream"\n'
    )
    return path


def since(cluster: Cluster, start: float) -> list[LogLine]:
    """What nginx answered since ``start``, less the requests wrk itself
    abandoned when its run ended (logged as 499, client closed request: at
    most one per connection, and per method)."""
    lines = [line for line in cluster.log_lines() if line.at >= start]
    abandoned = Counter(line.method for line in lines if line.status == 499)
    assert abandoned["GET"] <= GET_CONNECTIONS and abandoned["POST"] <= POST_CONNECTIONS, abandoned
    return [line for line in lines if line.status != 499]


def load(
    cluster: Cluster, post_script: Path, event: Callable[[], tuple[float, float]]
) -> tuple[list[LogLine], tuple[float, float], str]:
    """GET and POST load for LOAD_SECONDS; ``event()`` at EVENT_AT, which
    says when it began and ended.  The lines nginx logged, that, wrk's output."""
    start = time.time()
    gets = cluster.wrk("/hello.lua", GET_CONNECTIONS, LOAD_SECONDS)
    posts = cluster.wrk("/post.lua", POST_CONNECTIONS, LOAD_SECONDS, script=post_script)
    time.sleep(EVENT_AT)
    window = event()
    outputs = [gets.communicate(timeout=60)[0], posts.communicate(timeout=60)[0]]
    return since(cluster, start), window, "\n".join(outputs)


def lost_posts(
    lines: list[LogLine], event: tuple[float, float], victim: str
) -> tuple[int, int, int]:
    """POSTs that failed: those in flight when the host was lost (started
    before the event ended), those sent after it; and how many POSTs the
    lost host had in flight during the event."""
    began, ended = event
    failed = [line for line in lines if line.method == "POST" and line.status != 200]
    before = sum(line.started <= ended for line in failed)
    in_flight = sum(
        line.started <= ended and line.at >= began and victim in line.upstream
        for line in lines
        if line.method == "POST"
    )
    return before, len(failed) - before, in_flight


def slowest_get(lines: list[LogLine]) -> float:
    return max(line.took for line in lines if line.method == "GET")


def latest_loss(lines: list[LogLine], event: tuple[float, float]) -> float:
    """How long after the event the last failed request started (s)."""
    failed = [line.started - event[1] for line in lines if line.status not in (200, 499)]
    return max(failed, default=0.0)


def assert_takes_load_again(cluster: Cluster, upstream: str) -> None:
    # nginx tries a failed host again after fail_timeout; a wrk run then
    # shows it serving its share.
    time.sleep(FAIL_TIMEOUT + 0.5)
    start = time.time()
    cluster.wrk("/hello.lua", GET_CONNECTIONS, 2.0).communicate(timeout=60)
    lines = since(cluster, start)
    served = spread(lines)
    assert all(line.status == 200 for line in lines), Counter(line.status for line in lines)
    assert served[upstream] >= 0.15 * len(lines), served


def test_requests_spread_across_hosts(cluster: Cluster) -> None:
    start = time.time()
    output = cluster.wrk("/hello.lua", GET_CONNECTIONS, 2.0).communicate(timeout=60)[0]
    lines = since(cluster, start)
    assert len(lines) > 300, output
    assert all(line.status == 200 for line in lines), Counter(line.status for line in lines)
    served = spread(lines)
    assert set(served) == {host.upstream for host in cluster.hosts}
    # Round robin over equal hosts: each within a few % of a third.
    for host in cluster.hosts:
        assert abs(served[host.upstream] / len(lines) - 1 / 3) < 0.05, served


def test_a_counter_in_redis_is_the_same_on_every_host(cluster: Cluster) -> None:
    answers = cluster.get("/visits.lua?reset=1", *["/visits.lua"] * 30)
    hosts = []
    for expected, (status, headers, body) in enumerate(answers, start=1):
        assert status == 200, body
        assert body.startswith(f"visits: {expected}\n"), body
        hosts.append(headers["x-upstream"])
    assert set(hosts) == {host.upstream for host in cluster.hosts}


def test_a_session_in_redis_is_the_same_on_every_host(cluster: Cluster) -> None:
    sid = f"s{os.getpid()}"
    answers = cluster.get(f"/session.lua?sid={sid}&set=ada", *[f"/session.lua?sid={sid}"] * 6)
    writer = answers[0][1]["x-upstream"]
    readers = set()
    for status, headers, body in answers:
        assert (status, body) == (200, "name=ada\n")
        readers.add(headers["x-upstream"])
    assert readers - {writer}, "read back on another host than the writer"


def failures(lines: list[LogLine]) -> dict[str, Counter[int]]:
    table: dict[str, Counter[int]] = {"GET": Counter(), "POST": Counter()}
    for line in lines:
        table[line.method][line.status] += 1
    return table


def test_a_killed_host_costs_no_get(cluster: Cluster, post_script: Path) -> None:
    victim = cluster.hosts[1]
    lines, event, output = load(cluster, post_script, lambda: cluster.kill_host(victim))
    table = failures(lines)
    after = [line for line in lines if line.started >= event[1] + 0.5]
    in_flight_lost, later_lost, in_flight = lost_posts(lines, event, victim.upstream)
    print(f"killed; by method and status: {table}; "
          f"retried: {sum(line.retried for line in lines)}; POSTs lost: {in_flight_lost} "
          f"in flight (of {in_flight} it had in flight), {later_lost} sent "
          f"after the kill, the last {latest_loss(lines, event) * 1000:.0f} ms after; "
          f"slowest GET {slowest_get(lines):.3f} s")  # fmt: skip
    assert set(table["GET"]) == {200}, table
    assert table["GET"][200] > 1000, output
    # POSTs: only those in flight on the host when it died may fail (502).
    assert table["POST"][200] > 100, output
    # A POST sent after the kill can still meet a kept-alive connection
    # to the dead host that nginx has not yet seen close (one per such
    # connection, at once): none later than a moment after the kill.
    assert in_flight_lost + later_lost <= POST_CONNECTIONS, table
    failed = [line for line in lines if line.method == "POST" and line.status != 200]
    assert all(line.started < event[1] + 0.5 for line in failed), failed
    assert set(table["POST"]) <= {200, 502}, table
    # After the kill, the survivors serve everything.
    assert victim.upstream not in spread(after), spread(after)
    # It comes back.
    cluster.start_host(victim)
    cluster.wait_host(victim)
    assert_takes_load_again(cluster, victim.upstream)


def test_a_host_cut_off_costs_no_get(cluster: Cluster, post_script: Path) -> None:
    victim = cluster.hosts[2]
    try:
        lines, event, output = load(cluster, post_script, lambda: cluster.link(victim, up=False))
        table = failures(lines)
        in_flight_lost, later_lost, in_flight = lost_posts(lines, event, victim.upstream)
        print(f"link down; by method and status: {table}; "
              f"retried: {sum(line.retried for line in lines)}; POSTs lost: {in_flight_lost} "
              f"in flight (of {in_flight} it had in flight), {later_lost} sent "
              f"after the link went down, the last {latest_loss(lines, event) * 1000:.0f} ms "
              f"after; slowest GET {slowest_get(lines):.3f} s")  # fmt: skip
        assert set(table["GET"]) == {200}, table
        assert table["GET"][200] > 1000, output
        # A POST sent to the silent host (in flight, or on a kept-alive
        # connection nginx has not yet seen die) times out: 504.  nginx marks
        # the host failed at the first error and retries it only after
        # fail_timeout, so a few, never a flood.
        lost = sum(count for status, count in table["POST"].items() if status != 200)
        assert set(table["POST"]) <= {200, 504}, table
        assert lost <= 2 * POST_CONNECTIONS, table
    finally:
        cluster.link(victim, up=True)
    assert_takes_load_again(cluster, victim.upstream)


def test_no_host_logged_an_error(cluster: Cluster) -> None:
    # Runs last: the kills and link changes above must not have left a host
    # with a traceback (the killed one's log ends mid-way, which is fine).
    for host in cluster.hosts:
        log = (cluster.tmp / f"{host.namespace}.log").read_text("utf-8", "replace")
        assert "Traceback (most recent call last)" not in log, log[-3000:]
