"""Cosockets end to end with unmodified lua-resty-dns (Debian's
lua-nginx-dns), UDP and TCP, against a real DNS server on loopback:
Debian's dnsmasq with local records only (--no-resolv, --local=/test/:
it never forwards a query anywhere), through real nginx, on fcgi-lua and
on OpenResty (the oracle) with the same script and expected body."""

from __future__ import annotations

import shutil
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from .e2e_clients import http_request
from .e2e_stack import Logs, Stack, free_port, needs, peer_server

pytestmark = pytest.mark.e2e

DNSMASQ = shutil.which("dnsmasq") or (
    "/usr/sbin/dnsmasq" if Path("/usr/sbin/dnsmasq").exists() else None
)
RESTY_DNS = Path("/usr/share/lua/5.1/nginx/dns/resolver.lua")
ROUTES = ["unix", "tcp", "oracle"]

RECORDS = [
    "--local=/test/",  # answer *.test from the records below, NXDOMAIN otherwise
    "--address=/example.test/10.1.2.3",
    "--host-record=v6.test,fd00::1234",
    "--host-record=target.test,10.9.9.9",
    "--cname=alias.test,target.test",
    "--txt-record=txt.test,hello world",
    "--mx-host=example.test,mail.example.test,10",
    "--srv-host=_sip._tcp.example.test,sip.example.test,5060,1,2",
]


def _answers(port: int) -> bool:
    query = (
        struct.pack("!HHHHHH", 1, 0x0100, 1, 0, 0, 0) + b"\x07example\x04test\x00\x00\x01\x00\x01"
    )
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.2)
        try:
            sock.sendto(query, ("127.0.0.1", port))
            return len(sock.recv(512)) > 12
        except OSError:
            return False


@pytest.fixture(scope="module")
def dns_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    needs("dnsmasq", DNSMASQ is not None)
    needs("lua-nginx-dns", RESTY_DNS.exists())
    assert DNSMASQ is not None
    workdir = tmp_path_factory.mktemp("dnsmasq")
    port = free_port()
    argv = [DNSMASQ, "--keep-in-foreground", f"--port={port}", "--listen-address=127.0.0.1"]
    argv += ["--bind-interfaces", "--no-resolv", "--no-hosts", "--conf-file=/dev/null"]
    argv += [f"--pid-file={workdir / 'dnsmasq.pid'}", "--log-facility=-", *RECORDS]
    with peer_server("dnsmasq", argv, workdir, lambda: _answers(port)):
        yield port


def get(e2e: Stack, route: str, path: str) -> str:
    resp = http_request(e2e.urls[route], path)
    assert resp.status == 200, resp.text
    return resp.text


# Records from dnsmasq's local data have TTL 0 (its --local-ttl default).
ANSWERS = """\
udp example.test 1: 1 answers
  address=10.1.2.3 name=example.test ttl=0 type=1
udp sub.example.test 1: 1 answers
  address=10.1.2.3 name=sub.example.test ttl=0 type=1
udp v6.test 28: 1 answers
  address=fd00:0:0:0:0:0:0:1234 name=v6.test ttl=0 type=28
udp alias.test 1: 2 answers
  cname=target.test name=alias.test ttl=0 type=5
  address=10.9.9.9 name=target.test ttl=0 type=1
udp txt.test 16: 1 answers
  name=txt.test ttl=0 txt=hello world type=16
udp example.test 15: 1 answers
  exchange=mail.example.test name=example.test preference=10 ttl=0 type=15
udp _sip._tcp.example.test 33: 1 answers
  name=_sip._tcp.example.test port=5060 priority=1 target=sip.example.test ttl=0 type=33 weight=2
udp nope.test 1: server error: 3 name error
tcp example.test 1: 1 answers
  address=10.1.2.3 name=example.test ttl=0 type=1
tcp sub.example.test 1: 1 answers
  address=10.1.2.3 name=sub.example.test ttl=0 type=1
tcp v6.test 28: 1 answers
  address=fd00:0:0:0:0:0:0:1234 name=v6.test ttl=0 type=28
tcp alias.test 1: 2 answers
  cname=target.test name=alias.test ttl=0 type=5
  address=10.9.9.9 name=target.test ttl=0 type=1
tcp txt.test 16: 1 answers
  name=txt.test ttl=0 txt=hello world type=16
tcp example.test 15: 1 answers
  exchange=mail.example.test name=example.test preference=10 ttl=0 type=15
tcp _sip._tcp.example.test 33: 1 answers
  name=_sip._tcp.example.test port=5060 priority=1 target=sip.example.test ttl=0 type=33 weight=2
tcp nope.test 1: server error: 3 name error
reverse: 3.2.1.10.in-addr.arpa
reverse v6: 4.3.2.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa
compress v6: fd00::1234
"""


@pytest.mark.parametrize("run", [1, 2])
@pytest.mark.parametrize("route", ROUTES)
def test_dns_queries(e2e: Stack, logs: Logs, dns_port: int, route: str, run: int) -> None:
    body = get(e2e, route, f"/dns_query.lua?port={dns_port}")
    assert body == ANSWERS


@pytest.mark.parametrize("route", ROUTES)
def test_dns_server_down(e2e: Stack, logs: Logs, route: str) -> None:
    logs.allow("nginx", r"recv\(\) failed \(111: Connection refused\)|connect\(\) failed")
    port = free_port()
    assert get(e2e, route, f"/dns_down.lua?port={port}") == (
        f"udp: nilfailed to receive reply from UDP server 127.0.0.1:{port}: connection refused\n"
        f"tcp: nilfailed to connect to TCP server 127.0.0.1:{port}: connection refused\n"
    )
