"""xmppd: an XMPP server."""
