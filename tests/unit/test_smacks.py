"""XEP-0198 sequence numbers: 'h' parsing, acks across the 2^32 wrap, impossible acks."""

import types

import pytest

from xmppd.extensions.smacks import ManagedStream, parse_h


@pytest.mark.parametrize(
    "value,expected",
    [
        ("0", 0),
        (" 7 ", 7),
        ("4294967295", 4294967295),
        ("4294967296", None),
        ("-1", None),
        ("1e3", None),
        ("²", None),
        ("", None),
        (None, None),
    ],
)
def test_h_is_an_unsigned_int(value, expected):
    assert parse_h(value) == expected


def stream_with(unacked: int, acked: int) -> ManagedStream:
    session = types.SimpleNamespace(stanzas_handled=0, room_opened=lambda: None)
    state = ManagedStream(types.SimpleNamespace(), session, None, 0)
    state.queue.extend([f"stanza {n}", 0.0, None] for n in range(unacked))
    state.acked = acked
    state.sent = (acked + unacked) % 2**32
    return state


def test_acks_wrap_around_past_two_to_the_32():
    state = stream_with(3, 2**32 - 1)
    assert state.is_possible(1) and not state.is_possible(3)
    state.acknowledge(1)  # 2^32 - 1 -> 0 -> 1: two stanzas
    assert [item for item, _, _ in state.queue] == ["stanza 2"] and state.acked == 1


def test_an_h_below_the_last_one_is_impossible():
    state = stream_with(2, 10)
    assert state.is_possible(10) and state.is_possible(12)
    assert not state.is_possible(9) and not state.is_possible(13)
