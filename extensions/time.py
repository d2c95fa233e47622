"""XEP-0202 Entity Time: the server's UTC time and offset."""

import datetime

from xmppd.extension import Extension, iq_handler
from xmppd.protocol.stanza import make_element, sub_element

NS_TIME = "urn:xmpp:time"


class EntityTime(Extension):
    xeps = {202: "2.0"}
    features = [NS_TIME]

    @iq_handler("get", NS_TIME, "time", to=("host",))
    async def entity_time(self, iq):
        now = datetime.datetime.now(datetime.UTC).astimezone()
        offset = now.utcoffset() or datetime.timedelta()
        minutes = int(offset.total_seconds() // 60)
        sign = "+" if minutes >= 0 else "-"
        element = make_element(f"{{{NS_TIME}}}time")
        sub_element(element, f"{{{NS_TIME}}}tzo", text=f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}")
        utc = now.astimezone(datetime.UTC)
        sub_element(
            element, f"{{{NS_TIME}}}utc", text=utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"
        )
        return element
