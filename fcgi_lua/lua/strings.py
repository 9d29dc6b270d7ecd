"""The Python side of ngx's string functions: digests, checksums and base64.

This module owns what ``ngx.md5``, ``ngx.md5_bin``, ``ngx.sha1_bin``,
``ngx.hmac_sha1``, ``ngx.crc32_short``/``crc32_long``,
``ngx.encode_base64`` and ``ngx.decode_base64`` compute (the Lua side,
argument checks included, is ngx/string.lua's), with nginx's results
(lua-nginx-module's ngx_http_lua_string.c); ``FUNCTIONS`` is what the
engine hands ngx.lua (and so ngx/string.lua) under these names.

What it must never do: keep state, or raise on a script's input (a bad
base64 string is ``None``, nil in Lua).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import zlib
from collections.abc import Callable
from typing import Any

# What ngx_decode_base64 accepts: the alphabet, then padding at the end.
_BASE64_TEXT = re.compile(rb"[A-Za-z0-9+/]*={0,2}")


def md5(s: bytes) -> bytes:
    return hashlib.md5(s).hexdigest().encode()


def md5_bin(s: bytes) -> bytes:
    return hashlib.md5(s).digest()


def sha1_bin(s: bytes) -> bytes:
    return hashlib.sha1(s).digest()


def hmac_sha1(key: bytes, s: bytes) -> bytes:
    return hmac.digest(key, s, "sha1")


def crc32(s: bytes) -> int:
    return zlib.crc32(s)


def encode_base64(s: bytes, no_padding: bool) -> bytes:
    encoded = base64.b64encode(s)
    return encoded.rstrip(b"=") if no_padding else encoded


def decode_base64(s: bytes) -> bytes | None:
    # nginx's ngx_decode_base64: padding optional, anything else invalid.
    if not _BASE64_TEXT.fullmatch(s):
        return None
    s = s.rstrip(b"=")
    if len(s) % 4 == 1:
        return None
    try:
        return base64.b64decode(s + b"=" * (-len(s) % 4))
    except binascii.Error:
        return None


# ngx/string.lua's helper names -> the functions.
FUNCTIONS: dict[bytes, Callable[..., Any]] = {
    b"md5": md5,
    b"md5_bin": md5_bin,
    b"sha1_bin": sha1_bin,
    b"hmac_sha1": hmac_sha1,
    b"crc32": crc32,
    b"encode_base64": encode_base64,
    b"decode_base64": decode_base64,
}
