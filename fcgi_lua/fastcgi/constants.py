"""Numbers from the FastCGI 1.0 specification, and the sizes we choose to send.

Plain ``int`` constants rather than enums: they sit on the per-record hot
path, where an int compare is the cheapest thing Python can do.
"""

from __future__ import annotations

from typing import Final

VERSION_1: Final = 1
HEADER_LEN: Final = 8

# Record types (spec section 8).
FCGI_BEGIN_REQUEST: Final = 1
FCGI_ABORT_REQUEST: Final = 2
FCGI_END_REQUEST: Final = 3
FCGI_PARAMS: Final = 4
FCGI_STDIN: Final = 5
FCGI_STDOUT: Final = 6
FCGI_STDERR: Final = 7
FCGI_DATA: Final = 8
FCGI_GET_VALUES: Final = 9
FCGI_GET_VALUES_RESULT: Final = 10
FCGI_UNKNOWN_TYPE: Final = 11

RECORD_TYPE_NAMES: Final[dict[int, str]] = {
    FCGI_BEGIN_REQUEST: "BEGIN_REQUEST",
    FCGI_ABORT_REQUEST: "ABORT_REQUEST",
    FCGI_END_REQUEST: "END_REQUEST",
    FCGI_PARAMS: "PARAMS",
    FCGI_STDIN: "STDIN",
    FCGI_STDOUT: "STDOUT",
    FCGI_STDERR: "STDERR",
    FCGI_DATA: "DATA",
    FCGI_GET_VALUES: "GET_VALUES",
    FCGI_GET_VALUES_RESULT: "GET_VALUES_RESULT",
    FCGI_UNKNOWN_TYPE: "UNKNOWN_TYPE",
}

NULL_REQUEST_ID: Final = 0

# BEGIN_REQUEST flags.
KEEP_CONN: Final = 1

# Roles.
RESPONDER: Final = 1
AUTHORIZER: Final = 2
FILTER: Final = 3

ROLE_NAMES: Final[dict[int, str]] = {
    RESPONDER: "RESPONDER",
    AUTHORIZER: "AUTHORIZER",
    FILTER: "FILTER",
}

# END_REQUEST protocol statuses.
REQUEST_COMPLETE: Final = 0
CANT_MPX_CONN: Final = 1
OVERLOADED: Final = 2
UNKNOWN_ROLE: Final = 3

# Variable names a web server may ask for with GET_VALUES.
MAX_CONNS: Final = b"FCGI_MAX_CONNS"
MAX_REQS: Final = b"FCGI_MAX_REQS"
MPXS_CONNS: Final = b"FCGI_MPXS_CONNS"

# The content length field is 16 bits.
MAX_CONTENT_LENGTH: Final = 0xFFFF

# What we put in one record we send.  Monkey 1.6 reads a record into a
# fixed 65528-byte buffer (and mis-parses a record whose padding arrives in
# a later read, hence zero padding on everything we send), so a whole
# record must stay <= 65528 bytes: 8 header bytes + 65520 content bytes.
# 65520 is also a multiple of 8, so records stay aligned without padding.
MAX_SEND_CONTENT_LENGTH: Final = 65520
