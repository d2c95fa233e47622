"""XEP-0092 Software Version: the server's name and version."""

from importlib.metadata import PackageNotFoundError, version

from xmppd.extension import Extension, iq_handler
from xmppd.protocol.stanza import make_element, sub_element

NS_VERSION = "jabber:iq:version"


def _installed_version() -> str:
    try:
        return version("xmppd")
    except PackageNotFoundError:
        return "unknown"


class SoftwareVersion(Extension):
    xeps = {92: "1.1"}
    features = [NS_VERSION]

    @iq_handler("get", NS_VERSION, "query", to=("host",))
    async def software_version(self, iq):
        query = make_element(f"{{{NS_VERSION}}}query")
        sub_element(query, f"{{{NS_VERSION}}}name", text="xmppd")
        sub_element(query, f"{{{NS_VERSION}}}version", text=_installed_version())
        return query
