"""Limits on what one peer may make us buffer, each with its reason."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

# The PARAMS of one request are buffered whole before the request is
# dispatched, so their size must be capped.  nginx forwards at most
# large_client_header_buffers (default 4 x 8 KiB) of request headers plus
# ~1 KiB of CGI variables, and Monkey caps its request header at 32 KiB:
# 64 KiB leaves room for both with their defaults, while bounding the
# memory one request can pin.  Counted over names + values, not the
# length prefixes.
DEFAULT_MAX_PARAMS_BYTES: Final = 64 * 1024

# A real request carries ~20 CGI variables plus one per HTTP header, rarely
# more than 100 in all.  Each pair costs ~150 bytes of Python objects, so
# without a count cap 64 KiB of two-byte pairs would turn into ~5 MB of
# tuples.  1000 is ten times what real clients send.
DEFAULT_MAX_PARAMS_COUNT: Final = 1000


@dataclass(frozen=True, slots=True)
class Limits:
    """What a Connection enforces on its peer (-> RemoteProtocolError).

    The same limits apply to the names of a GET_VALUES record.  The
    request body is not limited here: it streams out as ``Stdin`` events
    and the server enforces its own body limit (413).
    """

    max_params_bytes: int = DEFAULT_MAX_PARAMS_BYTES
    max_params_count: int = DEFAULT_MAX_PARAMS_COUNT

    def __post_init__(self) -> None:
        for name in ("max_params_bytes", "max_params_count"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ValueError(f"Limits.{name} must be a positive int, got {value!r}")
