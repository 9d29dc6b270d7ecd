"""Debian's lua-nginx-kafka (lua-resty-kafka) and lua-nginx-redis-connector
(lua-resty-redis-connector), unmodified, through real nginx on fcgi-lua and
on OpenResty (the oracle), same bodies.

lua-resty-kafka needs LuaJIT's FFI (int64_t offsets), ``bit`` and
``ngx.crc32_long``; no Kafka is packaged for Debian, so the test runs a
broker of its own that speaks the two v0 calls a sync producer makes
(Metadata, Produce) and records the bytes it received."""

from __future__ import annotations

import socket
import struct
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from .e2e_clients import http_request
from .e2e_peers import ORACLE_SOCKET_ERRORS
from .e2e_stack import Logs, Stack, free_port, needs

pytestmark = pytest.mark.e2e

ROUTES = ["unix", "tcp", "oracle"]
KAFKA = Path("/usr/share/lua/5.1/nginx/kafka/producer.lua")
CONNECTOR = Path("/usr/share/lua/5.1/nginx/redis/connector.lua")


def _string(data: bytes, at: int) -> tuple[bytes, int]:
    (length,) = struct.unpack_from(">h", data, at)
    return data[at + 2 : at + 2 + length], at + 2 + length


def _kstring(value: bytes) -> bytes:
    return struct.pack(">h", len(value)) + value


class Broker:
    """A Kafka broker of one node and one partition per topic: Metadata v0
    and Produce v0, offsets counted per topic from 0."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port: int = self.listener.getsockname()[1]
        self.offsets: dict[bytes, int] = {}
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        self.listener.settimeout(0.2)
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            buffer = b""
            try:
                while True:
                    while len(buffer) < 4 or len(buffer) < 4 + struct.unpack(">i", buffer[:4])[0]:
                        chunk = conn.recv(65536)
                        if not chunk:
                            return
                        buffer += chunk
                    size = struct.unpack(">i", buffer[:4])[0]
                    message, buffer = buffer[4 : 4 + size], buffer[4 + size :]
                    conn.sendall(self._answer(message))
            except OSError:
                return

    def _answer(self, message: bytes) -> bytes:
        api_key, _version, correlation = struct.unpack_from(">hhi", message)
        _client, at = _string(message, 8)
        if api_key == 3:  # Metadata
            (count,) = struct.unpack_from(">i", message, at)
            at += 4
            topics = []
            for _ in range(count):
                topic, at = _string(message, at)
                topics.append(topic)
            body = struct.pack(">i", 1) + struct.pack(">i", 0) + _kstring(b"127.0.0.1")
            body += struct.pack(">i", self.port) + struct.pack(">i", len(topics))
            for topic in topics:
                body += struct.pack(">h", 0) + _kstring(topic) + struct.pack(">i", 1)
                body += struct.pack(">hii", 0, 0, 0) + struct.pack(">ii", 1, 0)
                body += struct.pack(">ii", 1, 0)
        elif api_key == 0:  # Produce: acks, timeout, [topic [partition, set]]
            at += 6
            (count,) = struct.unpack_from(">i", message, at)
            at += 4
            body = struct.pack(">i", count)
            for _ in range(count):
                topic, at = _string(message, at)
                (partitions,) = struct.unpack_from(">i", message, at)
                at += 4
                body += _kstring(topic) + struct.pack(">i", partitions)
                for _ in range(partitions):
                    partition, set_size = struct.unpack_from(">ii", message, at)
                    at += 8 + set_size
                    with self.lock:
                        offset = self.offsets.get(topic, 0)
                        self.offsets[topic] = offset + 1
                    body += struct.pack(">ihq", partition, 0, offset)
        else:
            raise OSError(f"unexpected api key {api_key}")
        reply = struct.pack(">i", correlation) + body
        return struct.pack(">i", len(reply)) + reply

    def close(self) -> None:
        self.stop.set()
        self.listener.close()
        self.thread.join(timeout=2)


@pytest.fixture(scope="module")
def broker() -> Iterator[Broker]:
    needs("lua-nginx-kafka", KAFKA.exists())
    server = Broker()
    yield server
    server.close()


def expected_kafka(topic: str) -> str:
    name = topic.encode()

    # ProduceRequest v0 as lua-resty-kafka lays it out (request.lua): the
    # crc32 of each message is ngx.crc32_long, the int64 an FFI int64_t.
    def message(key: bytes, value: bytes) -> bytes:
        inner = b"\x00\x00" + struct.pack(">i", len(key)) + key
        inner += struct.pack(">i", len(value)) + value
        crc = zlib.crc32(inner)
        return struct.pack(">qiI", 0, len(inner) + 4, crc) + inner

    messages = message(b"key1", b"hello") + message(b"key2", b"world")
    payload = struct.pack(">hhi", 0, 0, 7) + _kstring(b"fcgi") + struct.pack(">hii", 1, 1500, 1)
    payload += _kstring(name) + struct.pack(">iii", 1, 0, len(messages)) + messages
    payload += struct.pack(">q", 1234567890123)
    encoded = struct.pack(">i", len(payload)) + payload
    return (
        f"encoded: {len(encoded)} {encoded.hex()}\n"
        # a send answers the partition's offset after its batch (sendbuffer.lua)
        "send 1: 1LL nil\nsend 2: 2LL nil\nsend 3: 3LL nil\n"
        "refused: nil not found topic\n"
    )


@pytest.mark.parametrize("route", ROUTES)
def test_kafka_producer(e2e: Stack, logs: Logs, broker: Broker, route: str) -> None:
    logs.allow("nginx", ORACLE_SOCKET_ERRORS + "|all brokers failed")
    logs.allow("fcgi-lua", "all brokers failed in fetch topic metadata")
    topic = f"events-{route}"
    path = f"/kafka_produce.lua?topic={topic}&port={broker.port}&refused={free_port()}"
    resp = http_request(e2e.urls[route], path)
    assert resp.status == 200, resp.text
    assert resp.text == expected_kafka(topic)


def test_kafka_same_as_openresty(e2e: Stack, logs: Logs, broker: Broker) -> None:
    logs.allow("nginx", ORACLE_SOCKET_ERRORS + "|all brokers failed")
    logs.allow("fcgi-lua", "all brokers failed in fetch topic metadata")
    refused = free_port()
    bodies = []
    for route in ("unix", "oracle"):
        topic = f"same-{route[:4]}"  # the same length: the encoded bytes compare
        path = f"/kafka_produce.lua?topic={topic}&port={broker.port}&refused={refused}"
        body = http_request(e2e.urls[route], path).text
        bodies.append(body.replace(topic, "T").replace(topic.encode().hex(), "T"))
    assert bodies[0] == bodies[1]


@pytest.mark.parametrize("route", ROUTES)
def test_redis_connector(
    e2e: Stack,
    logs: Logs,
    redis_port: int,
    route: str,
) -> None:
    needs("lua-nginx-redis-connector", CONNECTOR.exists())
    logs.allow("nginx", ORACLE_SOCKET_ERRORS)
    refused = free_port()
    path = f"/redis_connector.lua?port={redis_port}&key=rc-{route}&refused={refused}"
    resp = http_request(e2e.urls[route], path)
    assert resp.status == 200, resp.text
    assert resp.text == (
        "connect: ok\nset: OK\nget: value\nmissing is ngx.null: true\nkeepalive: 1\n"
        "reused: true\nget again: value\nkeepalive: 1\n"
        "refused: nil connection refused\n"
    )
