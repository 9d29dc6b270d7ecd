"""The Python floor: a uvloop FastCGI responder that answers canned bytes.

What any Python responder on uvloop costs per request behind nginx, with
no parsing beyond the record headers, no params, no Lua: the line under
fcgi-lua's own figure in bench/run.py's table (bench/README.md).  Not a
server to use: it answers every request with the same "Hello, world!".

    python3 bench/floor.py /tmp/floor.sock
"""

from __future__ import annotations

import asyncio
import os
import struct
import sys

import uvloop

HEADER = struct.Struct(">BBHHBx")
BODY = b"Status: 200 OK\r\nContent-Type: text/plain\r\n\r\nHello, world!\n"
STDIN, BEGIN = 5, 1


def answer(request_id: int) -> bytes:
    return (
        HEADER.pack(1, 6, request_id, len(BODY), 0)
        + BODY
        + HEADER.pack(1, 3, request_id, 8, 0)
        + b"\0\0\0\0\0\0\0\0"  # END_REQUEST: app status 0, REQUEST_COMPLETE
    )


class Floor(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.buffer = b""
        self.keep = True

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data
        position = 0
        out = []
        while len(buffer) - position >= 8:
            _, kind, request_id, length, padding = HEADER.unpack_from(buffer, position)
            end = position + 8 + length + padding
            if end > len(buffer):
                break
            if kind == BEGIN:
                self.keep = bool(buffer[position + 10] & 1)
            elif kind == STDIN and length == 0:
                out.append(answer(request_id))
            position = end
        self.buffer = buffer[position:]
        if out:
            self.transport.write(b"".join(out))  # type: ignore[attr-defined]
            if not self.keep:
                self.transport.close()


async def main(path: str) -> None:
    if os.path.exists(path):
        os.unlink(path)
    server = await asyncio.get_running_loop().create_unix_server(Floor, path, backlog=4096)
    os.chmod(path, 0o666)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(main(sys.argv[1]))
