"""The HTTP server's per-address key (xmppd/http.py): the per-address connection cap counts
an IPv4 address, mapped or not, and an IPv6 /64, which one subscriber usually holds whole."""

import pytest

from xmppd.http import address_key


@pytest.mark.parametrize(
    "peername, key",
    [
        (("192.0.2.1", 40000), "192.0.2.1"),
        (("::ffff:192.0.2.1", 40000, 0, 0), "192.0.2.1"),  # IPv4 on a dual-stack socket
        (("2001:db8::1", 40000, 0, 0), "2001:db8::/64"),
        (("2001:db8::ffff:ffff:ffff:1", 40000, 0, 0), "2001:db8::/64"),  # the same subscriber
        (("2001:db8:0:1::1", 40000, 0, 0), "2001:db8:0:1::/64"),  # another one
        (("fe80::1%eth0", 40000, 0, 2), "fe80::/64"),
        (None, "unknown"),
    ],
)
def test_address_key(peername, key):
    assert address_key(peername) == key
