"""The codec's state machines, as data.

Two tables drive a request:

- ``INPUT_TRANSITIONS``: what a record from the web server does to the
  request's input side, keyed by (state, record type, record has content).
  A missing key is the peer's protocol error; ``INPUT_ERRORS`` words it.
- ``OUTPUT_TRANSITIONS``: what one of our STDOUT/STDERR writes does to
  that stream, keyed by (state, write has data).  A missing key is our own
  misuse (LocalProtocolError).

``RECORD_ROUTES`` says, per record type, which part of the connection
handles a record; types not in it are unknown (answered with UNKNOWN_TYPE).

This module holds no logic and never raises.
"""

from __future__ import annotations

import enum
from typing import Final

from .constants import (
    FCGI_ABORT_REQUEST,
    FCGI_BEGIN_REQUEST,
    FCGI_DATA,
    FCGI_END_REQUEST,
    FCGI_GET_VALUES,
    FCGI_GET_VALUES_RESULT,
    FCGI_PARAMS,
    FCGI_STDERR,
    FCGI_STDIN,
    FCGI_STDOUT,
    FCGI_UNKNOWN_TYPE,
)


class Route(enum.Enum):
    BEGIN = "begins a request"
    REQUEST = "belongs to an active request"
    GET_VALUES = "management query"
    OUTBOUND_ONLY = "only flows from the application to the web server"


RECORD_ROUTES: Final[dict[int, Route]] = {
    FCGI_BEGIN_REQUEST: Route.BEGIN,
    FCGI_ABORT_REQUEST: Route.REQUEST,
    FCGI_PARAMS: Route.REQUEST,
    FCGI_STDIN: Route.REQUEST,
    FCGI_DATA: Route.REQUEST,
    FCGI_GET_VALUES: Route.GET_VALUES,
    FCGI_END_REQUEST: Route.OUTBOUND_ONLY,
    FCGI_STDOUT: Route.OUTBOUND_ONLY,
    FCGI_STDERR: Route.OUTBOUND_ONLY,
    FCGI_GET_VALUES_RESULT: Route.OUTBOUND_ONLY,
    FCGI_UNKNOWN_TYPE: Route.OUTBOUND_ONLY,
}


# IntEnum, not Enum: states are hashed in every table lookup (once per
# record), and IntEnum hashes in C while Enum.__hash__ is Python code.
class InputState(enum.IntEnum):
    PARAMS = 1
    STDIN = 2
    DONE = 3
    ABORTED = 4


INPUT_STATE_WORDS: Final[dict[InputState, str]] = {
    InputState.PARAMS: "while the PARAMS stream is open",
    InputState.STDIN: "while the STDIN stream is open",
    InputState.DONE: "after the STDIN stream ended",
    InputState.ABORTED: "after ABORT_REQUEST",
}


class InputAction(enum.Enum):
    FEED_PARAMS = enum.auto()  # buffer and decode, no event yet
    END_PARAMS = enum.auto()  # -> Params
    STDIN_DATA = enum.auto()  # -> Stdin
    STDIN_END = enum.auto()  # -> StdinEnd
    ABORT = enum.auto()  # -> AbortRequest
    DROP = enum.auto()  # no event


_Transitions = dict[tuple[InputState, int, bool], tuple[InputState, InputAction]]


def _input_transitions() -> _Transitions:
    table: _Transitions = {
        (InputState.PARAMS, FCGI_PARAMS, True): (InputState.PARAMS, InputAction.FEED_PARAMS),
        (InputState.PARAMS, FCGI_PARAMS, False): (InputState.STDIN, InputAction.END_PARAMS),
        (InputState.STDIN, FCGI_STDIN, True): (InputState.STDIN, InputAction.STDIN_DATA),
        (InputState.STDIN, FCGI_STDIN, False): (InputState.DONE, InputAction.STDIN_END),
    }
    for state in InputState:
        for has_content in (True, False):
            if state is InputState.ABORTED:
                # The web server promised nothing more; whatever still
                # arrives was in flight when it aborted.
                for record_type in (FCGI_ABORT_REQUEST, FCGI_PARAMS, FCGI_STDIN, FCGI_DATA):
                    table[state, record_type, has_content] = (state, InputAction.DROP)
            else:
                # ABORT_REQUEST has no body; we ignore one if sent.
                table[state, FCGI_ABORT_REQUEST, has_content] = (
                    InputState.ABORTED,
                    InputAction.ABORT,
                )
        # An empty DATA stream is harmless on any role (flup's client sends
        # one to every responder); non-empty DATA is only for FILTER, which
        # we do not serve: see Connection._request_record.
        table[state, FCGI_DATA, False] = (state, InputAction.DROP)
    return table


INPUT_TRANSITIONS: Final = _input_transitions()

INPUT_ERRORS: Final[dict[tuple[InputState, int], str]] = {
    (InputState.PARAMS, FCGI_STDIN): "STDIN before the PARAMS stream ended",
    (InputState.STDIN, FCGI_PARAMS): "PARAMS after the PARAMS stream ended",
    (InputState.DONE, FCGI_PARAMS): "PARAMS after the PARAMS stream ended",
    (InputState.DONE, FCGI_STDIN): "STDIN after the STDIN stream ended",
}


class OutputState(enum.IntEnum):
    UNUSED = 1  # not written yet
    OPEN = 2
    CLOSED = 3


OUTPUT_TRANSITIONS: Final[dict[tuple[OutputState, bool], OutputState]] = {
    (OutputState.UNUSED, True): OutputState.OPEN,
    (OutputState.UNUSED, False): OutputState.CLOSED,
    (OutputState.OPEN, True): OutputState.OPEN,
    (OutputState.OPEN, False): OutputState.CLOSED,
}

# Which stream states EndRequest must close with an empty record first.
# STDOUT always ends explicitly (the spec says so for every role);
# STDERR only if it was opened.
STDOUT_NEEDS_CLOSE: Final = frozenset({OutputState.UNUSED, OutputState.OPEN})
STDERR_NEEDS_CLOSE: Final = frozenset({OutputState.OPEN})
