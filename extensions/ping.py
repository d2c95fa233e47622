"""XEP-0199 XMPP Ping: answer pings sent to the server or to one's own account."""

from xmppd.extension import Extension, iq_handler

NS_PING = "urn:xmpp:ping"


class Ping(Extension):
    xeps = {199: "2.0.1"}
    features = [NS_PING]

    @iq_handler("get", NS_PING, "ping", to=("host", "self"))
    async def pong(self, iq):
        return None
