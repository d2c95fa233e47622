"""Sans-IO: the login attempt budgets of xmppd/throttle.py, on a fake clock."""

import dataclasses

import pytest

from xmppd.config import C2SOptions
from xmppd.throttle import MAX_FAILURE_DELAY, AuthThrottle, address_group

ALICE = "alice@localhost"


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def throttle(**options) -> tuple[AuthThrottle, Clock]:
    clock = Clock()
    defaults = dict(auth_failures_per_ip=5, auth_failures_per_account=3, auth_failure_window=100.0)
    return AuthThrottle(dataclasses.replace(C2SOptions(), **{**defaults, **options}), clock), clock


def granted(throttle, peer, account=ALICE, attempts=100) -> int:
    """How many attempts in a row (all failing) the budgets let through."""
    return sum(throttle.attempt(peer, account) is None for _ in range(attempts))


@pytest.mark.parametrize(
    "peer,group",
    [
        ("192.0.2.7", "192.0.2.7"),
        ("::ffff:192.0.2.7", "192.0.2.7"),  # IPv4 on a dual-stack socket
        ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::/64"),
        ("fe80::1%eth0", "fe80::/64"),
    ],
)
def test_address_groups(peer, group):
    assert address_group(peer, 64) == group


def test_address_budget_refuses_before_the_password_is_checked():
    limits, _ = throttle(auth_failures_per_account=100)
    assert granted(limits, "192.0.2.7", attempts=20) == 5
    assert limits.attempt("192.0.2.7", "bob@localhost") == "c2s.auth_failures_per_ip"
    assert limits.attempt("192.0.2.8", ALICE) is None  # another address has its own


def test_ipv6_addresses_of_one_64_share_a_budget():
    limits, _ = throttle(auth_failures_per_account=100)
    # An attacker with a /64 picks a fresh address for every guess.
    assert sum(limits.attempt(f"2001:db8:1:2::{n:x}", f"u{n}@localhost") is None for n in range(1, 50)) == 5
    assert limits.attempt("2001:db8:1:3::1", ALICE) is None  # the next /64 is someone else


def test_ipv6_prefix_is_configurable():
    limits, _ = throttle(ipv6_prefix=48, auth_failures_per_account=100)
    assert sum(limits.attempt(f"2001:db8:1:{n:x}::1", ALICE) is None for n in range(50)) == 5


def test_account_budget_is_per_address():
    limits, _ = throttle()
    assert granted(limits, "192.0.2.7") == 3
    assert limits.attempt("192.0.2.7", ALICE) == "c2s.auth_failures_per_account"
    assert limits.attempt("192.0.2.7", "bob@localhost") is None  # other accounts from there
    assert limits.attempt("198.51.100.1", ALICE) is None  # the user, from elsewhere


def test_budget_refills_over_the_window():
    limits, clock = throttle(auth_failures_per_account=100)
    assert granted(limits, "192.0.2.7") == 5
    clock.now += 20  # 5 per 100 s: one attempt back
    assert granted(limits, "192.0.2.7") == 1
    clock.now += 1000
    assert granted(limits, "192.0.2.7") == 5  # never more than the full budget


def test_success_gives_the_attempt_back():
    limits, _ = throttle()
    for _ in range(10):
        assert limits.attempt("192.0.2.7", ALICE) is None
        limits.succeeded("192.0.2.7", ALICE)
    assert granted(limits, "192.0.2.7") == 3


def test_failure_delay_doubles_up_to_the_documented_cap():
    limits, _ = throttle(auth_failures_per_ip=40, auth_failures_per_account=40, auth_failure_delay=1.0)
    delays = []
    for _ in range(12):
        limits.attempt("192.0.2.7", ALICE)
        delays.append(limits.failure_delay("192.0.2.7"))
    assert delays[:6] == [0.0, 1.0, 2.0, 4.0, 8.0, 16.0]
    assert delays[6:] == [MAX_FAILURE_DELAY] * 6 and MAX_FAILURE_DELAY == 30.0


def test_memory_is_bounded(monkeypatch):
    monkeypatch.setattr("xmppd.throttle.MAX_BUCKETS", 100)
    limits, _ = throttle()
    for n in range(1000):
        limits.attempt(f"10.0.{n // 256}.{n % 256}", ALICE)
    assert len(limits.per_address._buckets) <= 100 and len(limits.per_account._buckets) <= 100
