"""The base of the PEP parts that answer pubsub requests on pep.service's nodes
(requests.py, owner.py): what they share of the service, found once."""

from __future__ import annotations

from xmppd.extension import Extension


class PepPart(Extension):
    depends = ["pep.service"]

    def __init__(self, host, options):
        super().__init__(host, options)
        self.service = host.extensions["pep.service"]
        self.notifications = host.extensions["pep.notifications"]
        self.options = self.service.options
        self.store = self.service.store
        self.access = self.service.access
