"""The room password throttle of extensions/muc/occupants.py, on a fake clock: the
window slides, refusals do not extend it, and users seen long ago are forgotten."""

import pytest

from xmppd.extensions.muc import occupants
from xmppd.extensions.muc.occupants import PasswordFailures
from xmppd.protocol.jid import JID

ALICE, BOB = JID.parse("alice@localhost"), JID.parse("bob@localhost")


@pytest.fixture
def clock(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(occupants.time, "monotonic", lambda: now[0])
    return now


def test_limit_within_the_window_then_free_again(clock):
    failures = PasswordFailures(limit=3, window=60.0)
    for _ in range(3):
        assert not failures.is_throttled(ALICE)
        failures.add(ALICE)
        clock[0] += 10
    assert failures.is_throttled(ALICE) and not failures.is_throttled(BOB)
    clock[0] = 1000.0 + 60.0  # the first failure leaves the window
    assert not failures.is_throttled(ALICE)
    failures.add(ALICE)  # one more wrong one: three within 60 s again
    assert failures.is_throttled(ALICE)


def test_users_seen_long_ago_are_forgotten(clock):
    failures = PasswordFailures(limit=2, window=60.0)
    failures.add(ALICE)
    clock[0] += 30
    failures.add(BOB)
    clock[0] += 31  # ALICE's last failure is out of the window
    failures.is_throttled(BOB)
    assert list(failures.failures) == [BOB]


def test_no_limit(clock):
    failures = PasswordFailures(limit=0, window=60.0)
    for _ in range(100):
        failures.add(ALICE)
    assert not failures.is_throttled(ALICE) and not failures.failures
