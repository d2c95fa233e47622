"""XEP-0157 Contact Addresses for XMPP Services: whom to reach about abuse, security,
support... as a XEP-0128 form in the server's disco#info, from the config:

    [extensions.contact_info]
    abuse = ["mailto:abuse@example.org", "xmpp:abuse@example.org"]
    admin = ["xmpp:admin@example.org"]

No form is shown while no address is configured.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from xmppd import forms
from xmppd.extension import Extension

NS_SERVERINFO = "http://jabber.org/network/serverinfo"


class ContactInfo(Extension):
    xeps = {157: "1.1.1"}

    @dataclass(frozen=True)
    class Options:
        abuse: tuple[str, ...] = ()
        admin: tuple[str, ...] = ()
        feedback: tuple[str, ...] = ()
        sales: tuple[str, ...] = ()
        security: tuple[str, ...] = ()
        status: tuple[str, ...] = ()
        support: tuple[str, ...] = ()

        def validate(self, where):
            for field in fields(self):
                for address in getattr(self, field.name):
                    where.check(
                        field.name,
                        ":" in address and not address.startswith(":"),
                        f"{address!r} is not a URI (mailto:, xmpp:, https:...)",
                    )

    def disco_forms(self) -> list:
        addresses = [
            forms.Field(f"{field.name}-addresses", "list-multi", values=getattr(self.options, field.name))
            for field in fields(self.options)
            if getattr(self.options, field.name)
        ]
        if not addresses:
            return []
        return [forms.build("result", form_type=NS_SERVERINFO, fields=addresses)]
