"""req/s through one nginx with 1, 2 and 3 fcgi-lua hosts in network
namespaces (tests/hosts/cluster.py), repeated, with the spread: the figures
docs/scaling.md quotes.  Not a test: nothing fails on a slow machine.

    python3 -m tests.hosts.measure                      # 3 rounds, 5 s runs
    python3 -m tests.hosts.measure --rounds 5 --duration 10 --workers 2

Each round measures every host count once (1, 2, 3, then again), so the
machine's other load falls on all of them alike; the table gives the
median and the range over the rounds.  Needs root (ip netns), nginx, wrk,
redis-server.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
from pathlib import Path

from .cluster import Cluster, netns_problem, requests_per_second, run

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(namespace: str) -> float:
    """utime + stime of every process in ``namespace`` (ip netns pids)."""
    total = 0
    for pid in run("ip", "netns", "pids", namespace).split():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / TICK


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--workers", type=int, default=1, help="fcgi-lua workers per host")
    parser.add_argument("--connections", type=int, default=48)
    parser.add_argument("--threads", type=int, default=2, help="wrk -t")
    parser.add_argument("--path", default="/hello.lua")
    args = parser.parse_args()
    problem = netns_problem()
    if problem:
        print(problem, file=sys.stderr)
        return 1
    results: dict[int, list[float]] = {1: [], 2: [], 3: []}
    # CPU seconds per 1000 requests: fcgi-lua (all hosts), nginx, wrk.
    costs: dict[str, list[float]] = {"fcgi-lua": [], "nginx": [], "wrk": []}
    with tempfile.TemporaryDirectory(prefix="fcgi-lua-hosts-") as tmp:
        cluster = Cluster(Path(tmp), size=3, workers=args.workers)
        try:
            cluster.start()
            # Warm every host's worker (code cache, connections).
            cluster.wrk(args.path, args.connections, 2, threads=args.threads).communicate()
            for round_ in range(args.rounds):
                for count in (1, 2, 3):
                    # nginx's upstream: the first `count` hosts.  The others
                    # keep running, idle (as spare machines would).
                    cluster.upstream(cluster.hosts[:count])
                    cluster.wrk(args.path, args.connections, 1, threads=args.threads).communicate()
                    before = {h.namespace: cpu_seconds(h.namespace) for h in cluster.hosts}
                    nginx_before = cpu_seconds(cluster.front)
                    wrk_before = children_cpu()
                    out = cluster.wrk(
                        args.path, args.connections, args.duration, threads=args.threads
                    ).communicate()[0]
                    wrk_cpu = children_cpu() - wrk_before
                    nginx_cpu = cpu_seconds(cluster.front) - nginx_before
                    fcgi_cpu = sum(cpu_seconds(ns) - t for ns, t in before.items())
                    rate = requests_per_second(out)
                    results[count].append(rate)
                    done = rate * args.duration / 1000
                    costs["fcgi-lua"].append(fcgi_cpu / done)
                    costs["nginx"].append(nginx_cpu / done)
                    costs["wrk"].append(wrk_cpu / done)
                    print(
                        f"round {round_ + 1}: {count} host(s): {rate:.0f} req/s; CPU s per "
                        f"1000 requests: fcgi-lua {fcgi_cpu / done:.3f}, nginx "
                        f"{nginx_cpu / done:.3f}, wrk {wrk_cpu / done:.3f}",
                        flush=True,
                    )
        finally:
            cluster.stop()
    print()
    print(f"| hosts | req/s (median of {args.rounds}) | min | max |")
    print("|---:|---:|---:|---:|")
    for count, rates in results.items():
        median = statistics.median(rates)
        print(f"| {count} | {median:.0f} | {min(rates):.0f} | {max(rates):.0f} |")
    print()
    print("CPU seconds per 1000 requests (median over every run, min-max):")
    for name, values in costs.items():
        print(f"  {name}: {statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
