"""CBOR for the component's own session that decodes as deep as the router forwards.

The router re-encodes each caller's message for the component. It accepts msgpack messages up
to 1,024 containers deep (and json ones nearly 500), while cbor2 refuses to decode more than
400 by default; autobahn treats a message it cannot decode as a protocol violation and aborts
the whole session, so one deep argument from any caller used to knock the component off the
router. The component's CBOR decoder therefore takes ``DECODE_DEPTH`` levels, more than any
router-side decoder lets through. msgpack as the component's transport would carry the depth
too, but not what a json or cbor caller may send besides (ints beyond 64 bits, CBOR tags): the
router could not encode those for the component and the call would hang instead of being
refused. What the component *sends* stays within ``procedures.payload``'s limits, which every
caller's decoder accepts.
"""

from __future__ import annotations

from typing import Any

import cbor2
from autobahn.wamp.serializer import CBORObjectSerializer, CBORSerializer, Serializer

__all__ = ["DECODE_DEPTH", "DeepCBORSerializer", "decode_deep"]

DECODE_DEPTH = 4096  # msgpack's decoder, the deepest in the router, stops at 1,024


class _DeepCBORObjectSerializer(CBORObjectSerializer):
    def unserialize(self, payload: bytes) -> list[Any]:
        if self._batched:
            return super().unserialize(payload)
        return [cbor2.loads(payload, max_depth=DECODE_DEPTH)]


class DeepCBORSerializer(CBORSerializer):
    """WAMP-CBOR whose decoder accepts ``DECODE_DEPTH`` levels of nesting."""

    def __init__(self) -> None:
        Serializer.__init__(self, _DeepCBORObjectSerializer())


def decode_deep(transport: Any) -> None:
    """Give a freshly opened WAMP transport the deep CBOR decoder (if it speaks CBOR).

    Neither autobahn nor Crossbar's container config can set cbor2's depth limit, so the
    transport's serializer (chosen in its handshake) is swapped before the session sees any
    message."""
    serializer = getattr(transport, "_serializer", None)
    if type(serializer) is CBORSerializer:
        transport._serializer = DeepCBORSerializer()
