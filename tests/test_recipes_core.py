"""The sans-IO parts of leases, watches and locks, driven by hand with a fake clock (no etcd,
no event loop): the decisions both drivers (Twisted and asyncio) rely on."""

from __future__ import annotations

from typing import Any

import pytest

from txetcd.concurrency import LeaderKey, LockState, leader_of, lock_key_of
from txetcd.errors import (
    KeyNotFound,
    LeaseExpired,
    LeaseNotFound,
    LeaseNotGranted,
    LockNotHeld,
    PermissionDenied,
    Unavailable,
)
from txetcd.lease_core import LeaseGrant, LeaseLost, LeaseState, parse_keepalive
from txetcd.types import Header, KeySet, KeyValue, Range, b64
from txetcd.watch_core import (
    EventType,
    Reopen,
    WatchCanceled,
    WatchCompacted,
    WatchEvent,
    WatchState,
)

# -- leases ------------------------------------------------------------------------------------


def granted(ttl: int = 6, keepalive: bool | None = True, at: float = 100.0) -> LeaseState:
    state = LeaseState(ttl, None, keepalive)
    state.granted(LeaseGrant(0x51, ttl, Header(revision=7)), sent_at=at, now=at + 0.5)
    return state


def test_grant_sets_the_deadline_from_the_sending_and_schedules_at_a_third() -> None:
    state = LeaseState(6, None, keepalive=True)
    delay = state.granted(LeaseGrant(0x51, 6, Header(revision=7)), sent_at=100.0, now=100.5)
    assert delay == 2.0 and state.deadline == 106.0 and state.lease_id == 0x51
    assert state.time_left(100.5) == 5.5 and state.alive(105.9) and not state.alive(106.0)
    assert state.id_for_write(101.0) == 0x51
    with pytest.raises(LeaseExpired, match="without a keepalive"):
        state.id_for_write(106.5)  # a stalled process: the deadline passed before its timer


def test_a_lease_not_kept_alive_schedules_nothing_until_entered() -> None:
    state = granted(keepalive=None)
    assert state.renewed(101.0, 6, 101.0) is None
    assert state.entered(101.0) == 2.0 and state.keepalive is True
    assert granted(keepalive=False).entered(101.0) is None


def test_keepalive_answers_move_the_deadline_and_failures_retry_soon() -> None:
    state = granted(ttl=3)
    assert state.renewed(sent_at=101.0, ttl=3, now=101.2) == 1.0 and state.deadline == 104.0
    assert state.keepalive_failed(Unavailable("down")) == 0.5  # min(0.5, ttl/6)
    assert state.keepalive_failed(LeaseExpired("gone")) is None
    assert state.attempt_timeout == 1.0 and granted(ttl=30).attempt_timeout == 10.0


def test_loss_is_reported_once_and_never_after_revoke() -> None:
    state = granted()
    reason = state.deadline_passed()
    assert isinstance(reason, LeaseLost) and state.lose(reason) and not state.lose(reason)
    assert not state.alive(0.0) and state.lost_reason is reason
    with pytest.raises(LeaseLost):
        state.check_granted()
    revoked = granted()
    assert revoked.revoke() is True and not revoked.lose(LeaseExpired("late"))
    with pytest.raises(LeaseNotFound, match="revoked"):
        revoked.revoke()


def test_revoke_during_the_grant_refuses_the_granted_id() -> None:
    state = LeaseState(5, None, keepalive=None)
    with pytest.raises(LeaseNotGranted):
        state.check_granted()
    assert state.revoke() is False  # nothing granted yet: nothing to ask etcd
    with pytest.raises(LeaseNotFound):
        state.granted(LeaseGrant(0x52, 5, Header()), 1.0, 1.1)
    assert state.lease_id == 0x52  # the driver revokes this ID


def test_keepalive_answer_without_ttl_means_gone() -> None:
    assert parse_keepalive({"result": {"TTL": "4", "header": {"revision": "3"}}}, 1)[0] == 4
    with pytest.raises(LeaseExpired):
        parse_keepalive({"result": {"ID": "1", "header": {}}}, 1)


# -- watches -----------------------------------------------------------------------------------

def kv(key: bytes, rev: int, value: bytes = b"v") -> dict[str, Any]:
    return {"key": b64(key), "value": b64(value), "mod_revision": str(rev),
            "create_revision": str(rev), "version": "1"}


def created(watch_id: int, revision: int) -> dict[str, Any]:
    return {"created": True, "watch_id": str(watch_id), "header": {"revision": str(revision)}}


def test_a_watch_started_now_resumes_after_the_created_revision() -> None:
    state = WatchState([KeySet(b"a/", prefix=True), b"k"], b"ns/", prev_kv=True)
    assert [r["create_request"]["key"] for r in state.requests()] == [b64(b"ns/a/"), b64(b"ns/k")]
    assert "start_revision" not in state.requests()[0]["create_request"]
    stream = state.stream(now=0.0)
    assert not stream.receive(created(0, 10), 0.1).started
    assert stream.receive(created(1, 10), 0.2).started and stream.healthy
    assert [r.next_rev for r in state.ranges] == [11, 11]
    got = stream.receive({"watch_id": "1", "events": [{"kv": kv(b"ns/k", 12)}]}, 0.3)
    assert got.items == [WatchEvent(EventType.PUT, KeyValue(b"k", b"v", 1, 12, 12))]
    assert [r["create_request"]["start_revision"] for r in state.requests()] == [11, 13]


def test_events_below_the_resume_point_are_dropped_and_fragments_joined() -> None:
    state = WatchState(b"k", b"", start_revision=5)
    stream = state.stream(0.0)
    stream.receive(created(0, 9), 0.0)
    first = stream.receive({"events": [{"kv": kv(b"k", 5)}, {"kv": kv(b"k", 6)}]}, 0.0)
    assert [i.revision for i in first.items] == [5, 6]  # type: ignore[union-attr]
    again = state.stream(1.0)  # the stream broke; the server replays from 7, but also 6
    again.receive(created(0, 9), 1.0)
    assert again.receive({"fragment": True, "events": [{"kv": kv(b"k", 6)}]}, 1.0).items == []
    tail = again.receive({"events": [{"kv": kv(b"k", 7), "type": "DELETE"}]}, 1.0).items
    assert [(i.type, i.revision) for i in tail] == [(EventType.DELETE, 7)]  # type: ignore[union-attr]


def test_progress_notifications_and_compaction_move_the_resume_point() -> None:
    state = WatchState(b"quiet", b"")
    stream = state.stream(0.0)
    stream.receive(created(0, 3), 0.0)
    stream.receive({"watch_id": "0", "header": {"revision": "20"}}, 1.0)  # progress
    assert state.ranges[0].next_rev == 21
    compacted = stream.receive({"watch_id": "0", "canceled": True,
                                "compact_revision": "30"}, 2.0)
    assert compacted.items == [WatchCompacted(30)] and compacted.reopen
    assert state.ranges[0].next_rev == 30
    assert state.ended(stream, Reopen()) == 0  # reopened at once


def test_cancel_reasons_and_stream_ends_are_sorted_into_fatal_and_resumable() -> None:
    state = WatchState(b"k", b"")
    stream = state.stream(0.0)
    stream.receive(created(0, 3), 0.0)
    with pytest.raises(PermissionDenied):
        stream.receive({"watch_id": "0", "canceled": True,
                        "cancel_reason": "etcdserver: permission denied"}, 0.0)
    with pytest.raises(WatchCanceled):
        stream.receive({"watch_id": "0", "canceled": True, "cancel_reason": "odd"}, 0.0)
    assert state.ended(stream, Unavailable("reset")) == 1  # healthy stream: first backoff
    broken = state.stream(1.0)  # never created: consecutive failures back off longer
    assert state.ended(broken, None) == 2 and state.ended(state.stream(2.0), None) == 3
    with pytest.raises(RuntimeError):
        state.ended(stream, RuntimeError("consumer bug"))
    assert state.reconnects == 4


def test_a_silent_stream_is_probed_once_per_silence() -> None:
    stream = WatchState(b"k", b"", probe_interval=0.3).stream(now=10.0)
    assert not stream.needs_probe(10.2, 0.3) and stream.needs_probe(10.3, 0.3)
    stream.probing = True
    assert not stream.needs_probe(11.0, 0.3)
    stream.probe_answered(11.0)
    assert not stream.needs_probe(11.1, 0.3) and stream.needs_probe(11.4, 0.3)
    assert not stream.needs_probe(99.0, None)


# -- locks and elections -----------------------------------------------------------------------

def test_lock_key_read_back_must_still_carry_the_session_lease() -> None:
    mine = KeyValue(b"l/1", b"", 1, 8, 8, lease=0x9)
    assert lock_key_of(Range([mine], Header(), 1), b"l/1", 0x9) is mine
    for found in (Range([], Header(), 0), Range([mine], Header(), 1)):
        with pytest.raises(LeaseExpired):
            lock_key_of(found, b"l/1", 0x7 if found.kvs else 0x9)


def test_leader_answers() -> None:
    key = LeaderKey(b"ns/e", b"ns/e/1", 4, 0x9)
    assert LeaderKey.from_json(key.to_json()) == key
    assert leader_of({"kv": kv(b"ns/e/1", 4, b"me")}, b"ns/").key == b"e/1"
    with pytest.raises(KeyNotFound):
        leader_of({"header": {}}, b"")


def test_lock_state_from_not_held_to_held_to_released_or_lost() -> None:
    state = LockState(b"res")
    state.check_usable()
    for use in ("key", "release()"):
        with pytest.raises(LockNotHeld, match="before it is held"):
            state.check_held(use)
    with pytest.raises(LeaseExpired):  # the key vanished between lock and read-back
        state.held(b"res/1", Range([], Header(), 0), 0x9)
    state.held(b"res/1", Range([KeyValue(b"res/1", b"", 1, 8, 8, lease=0x9)], Header(), 1), 0x9)
    assert (state.key, state.fencing_token) == (b"res/1", 8) and "held" in repr(state)
    state.release()
    with pytest.raises(LockNotHeld, match="released already"):
        state.release()
    with pytest.raises(LockNotHeld, match="was released"):
        state.check_usable()  # a released lock is not acquired again
    assert state.key == b"res/1"  # still readable: a fenced write with it is refused by etcd
    lost = LockState(b"res")
    assert lost.lose(LeaseExpired("gone")) and not lost.lose(LeaseExpired("again"))
    with pytest.raises(RuntimeError, match="was lost"):
        lost.check_usable()
