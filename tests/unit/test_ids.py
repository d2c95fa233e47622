import time
import uuid

from xmppd import ids
from xmppd.ids import time_ordered_id


def test_ids_are_uuid7_and_grow():
    made = [time_ordered_id() for _ in range(20000)]  # several per millisecond
    assert made == sorted(made) and len(set(made)) == len(made)
    assert {uuid.UUID(i).version for i in made} == {7}


def test_ids_carry_the_time():
    before = time.time_ns() // 1_000_000
    stamp = uuid.UUID(time_ordered_id()).int >> 80
    assert before <= stamp <= time.time_ns() // 1_000_000 + 1


def test_ids_grow_when_the_clock_steps_back(monkeypatch):
    first = time_ordered_id()
    monkeypatch.setattr(ids.time, "time_ns", lambda: 0)
    assert time_ordered_id() > first
