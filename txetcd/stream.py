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

from .errors import EtcdError, ProtocolError, classify
from .interface import StreamHandle

__all__ = ["JsonStreamParser", "StreamDecoder", "Stream"]

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


class StreamDecoder:
    """The messages of one streamed response: ``{"result": ...}`` values go to the consumer, an
    ``{"error": ...}`` frame (or a bad value, or a consumer that raises) ends the stream."""

    def __init__(self) -> None:
        self._parser = JsonStreamParser()
        self.error: Exception | None = None

    def deliver(self, data: bytes, on_message: Callable[[dict[str, Any]], None]) -> bool:
        """Decode ``data`` and hand each result to ``on_message``; False once the stream must
        end (``error`` says why)."""
        try:
            for message in self._parser.feed(data):
                if not isinstance(message, dict):
                    raise ProtocolError(f"stream message is not an object: {message!r:.200}")
                if "error" in message:
                    raise classify(int(message["error"].get("http_code", 0) or 0), message)
                on_message(message.get("result", {}))
        except Exception as exc:  # noqa: BLE001 - a consumer bug or bad frame ends the stream
            self.error = exc
            return False
        return True

    def end(self, clean: bool, reason: str) -> Exception | None:
        """Why the stream ended when its connection closed (``clean``: at the end of the
        response); None for a clean end."""
        if self.error is not None:
            return self.error
        try:
            self._parser.close()
        except EtcdError as exc:
            return exc
        if not clean:
            return EtcdError(f"stream lost: {reason}", code=14, status=0)
        return None


#: An open stream, whichever driver opened it (``done``, ``cancel()``).
Stream = StreamHandle
