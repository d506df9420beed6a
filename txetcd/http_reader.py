"""Reading HTTP/1.1 responses, sans-IO: bytes in, complete answers out.

Both HTTP clients (Twisted's ``txetcd.http`` and asyncio's ``txetcd.aio_http``) read their
unary answers with it, so the two differ only in how they drive sockets. ``httptools``
(llhttp, in C) does the parsing.
"""

from __future__ import annotations

import httptools

__all__ = ["BadResponse", "ResponseReader"]


class BadResponse(Exception):
    """What a server sent is not an HTTP/1.1 response (garbled, or the wrong protocol)."""


class ResponseReader:
    """The response side of one keep-alive connection, sans-IO (h11 style): bytes in, a
    complete ``(status, body, keep_alive)`` out. Both HTTP clients (Twisted's ``txetcd.http``
    and ``txetcd.aio_http``) read their answers with it; only the socket handling differs."""

    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._body: list[bytes] = []
        self._done: tuple[int, bytes, bool] | None = None

    def feed(self, data: bytes) -> tuple[int, bytes, bool] | None:
        """The answer once ``data`` completes it, else None; ``BadResponse`` on garbage."""
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            raise BadResponse(str(exc)) from exc
        done, self._done = self._done, None
        return done

    # httptools' callbacks
    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        # Asked now: once the parser moves on to the next message it forgets both.
        body, self._body = b"".join(self._body), []
        self._done = (self._parser.get_status_code(), body, self._parser.should_keep_alive())
