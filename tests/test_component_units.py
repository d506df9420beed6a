"""Pure units of the component: no router, no etcd.

The publisher's ``Position`` (component.publisher): where a table's events were published up
to, stored in etcd so that a new publisher resends nothing already out.
"""

from __future__ import annotations

from component.publisher import Position


def test_position_covers_what_was_published() -> None:
    """The stored position: everything below its revision, and the listed keys at it."""
    position = Position(10)
    assert position.covers(9, b"a") and not position.covers(10, b"a")
    position.advance(10, b"a")
    position.advance(10, b"b")
    assert position.covers(10, b"b") and not position.covers(10, b"c")
    position.advance(12, b"c")
    assert position == Position(12, {b"c"}) == Position.decode(position.encode())
    assert not position.covers(12, b"a") and position.covers(11, b"z")


def test_position_through_a_retained_event() -> None:
    """From the router's last event (revision 7, key b): everything up to b in etcd's order."""
    position = Position(5).newest(Position(7, through=b"b"))
    assert position.covers(6, b"z")
    assert position.covers(7, b"a") and position.covers(7, b"b")  # up to and including b
    assert not position.covers(7, b"c") and not position.covers(8, b"a")
    assert position.covers(7, b"a")  # asked again (a watch replayed): still published
