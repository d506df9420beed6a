"""Server streams of the gateway (watch, observe, snapshot) as sequences of JSON values.

A streamed body is a run of concatenated JSON values: usually one per line, but a read may hold
a fraction of a value, several values, only a newline, or a final error frame without newline
(3.4/3.5). The parser therefore keeps a buffer across reads and decodes complete values one
after another; it never splits on newlines (the defect that lost txaioetcd's events).
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Callable
from typing import Any

from twisted.internet import defer, protocol
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone

from .errors import EtcdError, ProtocolError, classify

__all__ = ["JsonStreamParser", "Stream"]

_WHITESPACE = " \t\r\n"


class JsonStreamParser:
    """Feed bytes in, get complete JSON values out, whatever the read boundaries were."""

    def __init__(self) -> None:
        self._decoder = json.JSONDecoder()
        self._text = codecs.getincrementaldecoder("utf-8")()
        self._buffer = ""

    def feed(self, data: bytes) -> list[Any]:
        chunk = self._text.decode(data)
        self._buffer += chunk
        # Every complete value here is an object, so a chunk without "}" completes none; this
        # keeps a large value arriving in many reads from being re-parsed on every read.
        if "}" not in chunk:
            return []
        values = []
        buf, pos, end = self._buffer, 0, len(self._buffer)
        while True:
            while pos < end and buf[pos] in _WHITESPACE:
                pos += 1
            if pos == end:
                break
            try:
                value, pos_after = self._decoder.raw_decode(buf, pos)
            except json.JSONDecodeError:
                break  # incomplete: wait for more bytes
            values.append(value)
            pos = pos_after
        self._buffer = buf[pos:]
        return values

    @property
    def pending(self) -> str:
        return self._buffer.strip(_WHITESPACE)

    def close(self) -> None:
        """At end of stream any bytes left over are a truncated value: a protocol error."""
        self._text.decode(b"", final=True)
        if self.pending:
            raise ProtocolError(f"stream ended inside a JSON value: {self.pending[:200]!r}")


class _BodyReader(protocol.Protocol):
    def __init__(self, stream: Stream) -> None:
        self.stream = stream

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 - Twisted API
        self.stream._received(data)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:  # noqa: N802
        self.stream._ended(reason)


class Stream:
    """One open streaming response.

    Each ``{"result": ...}`` message goes to ``on_message``; an ``{"error": ...}`` frame ends the
    stream with a typed ``EtcdError``. ``done`` fires with None when the server closes cleanly
    (or after ``cancel()``), and errs with the error otherwise.
    """

    def __init__(self, response: Any, on_message: Callable[[dict[str, Any]], None]) -> None:
        self.on_message = on_message
        self.done: defer.Deferred[None] = defer.Deferred()
        self._parser = JsonStreamParser()
        self._reader = _BodyReader(self)
        self._error: Exception | None = None
        self._cancelled = False
        response.deliverBody(self._reader)

    def _received(self, data: bytes) -> None:
        if self._cancelled or self._error is not None:
            return
        try:
            for message in self._parser.feed(data):
                if not isinstance(message, dict):
                    raise ProtocolError(f"stream message is not an object: {message!r:.200}")
                if "error" in message:
                    raise classify(int(message["error"].get("http_code", 0) or 0), message)
                self.on_message(message.get("result", {}))
        except Exception as exc:  # noqa: BLE001 - a consumer bug or bad frame ends the stream
            self._error = exc
            self._close_connection()

    def _ended(self, reason: Failure) -> None:
        if self.done.called:
            return
        if self._cancelled:
            self.done.callback(None)
            return
        error = self._error
        if error is None:
            try:
                self._parser.close()
            except EtcdError as exc:
                error = exc
        if error is None and not reason.check(ResponseDone):
            error = EtcdError(f"stream lost: {reason.getErrorMessage()}", code=14, status=0)
        if error is None:
            self.done.callback(None)
        else:
            self.done.errback(Failure(error))

    def _close_connection(self) -> None:
        transport = self._reader.transport
        if transport is not None:
            # Stops the body producer, which closes the socket: a stream connection must never
            # go back to the pool while the server still writes to it.
            transport.stopProducing()

    def cancel(self) -> None:
        """Close the stream's connection; ``done`` then fires with None."""
        if self.done.called:
            return
        self._cancelled = True
        self._close_connection()
