"""The codec's exceptions.  Each one says whose fault it is.

- ``RemoteProtocolError``: the web server sent something the FastCGI spec
  (or one of our ``Limits``) does not allow.  The connection can no longer
  be read from: the server should log the error, may answer the offending
  request if ``http_status`` is set, then close the connection.
- ``LocalProtocolError``: we (the server code) misused the codec, e.g.
  sent STDOUT for a request that is not active.  That is a bug in fcgi-lua,
  not in the peer; the connection state is unchanged by the failed call.
"""

from __future__ import annotations

from .constants import REQUEST_COMPLETE


class ProtocolError(Exception):
    """Base class of the codec's errors.

    ``request_id`` is the request the error is about (0 for management
    records), or None when it is about the connection as a whole.
    """

    def __init__(self, message: str, *, request_id: int | None = None) -> None:
        super().__init__(message)
        self.request_id = request_id


class RemoteProtocolError(ProtocolError):
    """The peer broke the protocol; the connection is dead for reading.

    Attributes, for logging and for the answer:

    - ``request_id``: the request id of the offending record (None if the
      error is not about one record, e.g. a truncated stream).
    - ``record_type``: the type of the offending record, if one was parsed.
    - ``http_status``: if not None, the request ``request_id`` is still
      active and may be answered with this HTTP status (e.g. 431 for
      oversized params) before the connection is closed.
    - ``protocol_status``: the END_REQUEST protocol status to use for that
      answer.
    """

    def __init__(
        self,
        message: str,
        *,
        request_id: int | None = None,
        record_type: int | None = None,
        http_status: int | None = None,
        protocol_status: int = REQUEST_COMPLETE,
    ) -> None:
        super().__init__(message, request_id=request_id)
        self.record_type = record_type
        self.http_status = http_status
        self.protocol_status = protocol_status


class LocalProtocolError(ProtocolError):
    """We misused the codec (a bug on our side, not the peer's)."""
