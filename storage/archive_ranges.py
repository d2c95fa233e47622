"""An archive query as ranges of the archive order: the pure part of XEP-0313 filters
with XEP-0059 paging, shared by the backends that keep an archive sorted by its key
(SQLite turns the ranges into SQL, the memory backend into list positions).

The archive order is the key ``(when, id)``. Every bound a query sets, filter or RSM
cursor, is a bound on that key::

    start <= when           <=>  key >= (start, "")
    when <= end             <=>  key <  (the next float after end, "")
    after_id, after         <=>  key >  the key of that id
    before_id, before       <=>  key <  the key of that id

The filters make the range that `count` counts; the cursors narrow it to the page's.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

from .interfaces import ArchiveQuery

Key = tuple[float, str]


@dataclass(frozen=True)
class KeyRange:
    """Keys k with lower <= k (lower < k when lower_exclusive) and k < upper; a None
    end is unbounded."""

    lower: Key | None = None
    lower_exclusive: bool = False
    upper: Key | None = None

    def above(self, key: Key, exclusive: bool) -> KeyRange:
        """This range with the lower bound `key`, if that is tighter."""
        if self.lower is not None and (key, exclusive) <= (self.lower, self.lower_exclusive):
            return self
        return replace(self, lower=key, lower_exclusive=exclusive)

    def below(self, key: Key) -> KeyRange:
        """This range with the (exclusive) upper bound `key`, if that is tighter."""
        if self.upper is not None and key >= self.upper:
            return self
        return replace(self, upper=key)


def query_ranges(query: ArchiveQuery, position: Callable[[str], Key]) -> tuple[KeyRange, KeyRange]:
    """The range of the query's filters and the range of its page within it.

    `position` gives the key of an id of the owner's archive and raises
    UnknownArchiveId for any other id.
    """
    filters = KeyRange()
    if query.start is not None:
        filters = filters.above((query.start, ""), exclusive=False)
    if query.end is not None:
        filters = filters.below((math.nextafter(query.end, math.inf), ""))
    if query.after_id is not None:
        filters = filters.above(position(query.after_id), exclusive=True)
    if query.before_id is not None:
        filters = filters.below(position(query.before_id))
    page = filters
    if query.after is not None:
        page = page.above(position(query.after), exclusive=True)
    if query.before:  # an id; "" asks for the last page
        page = page.below(position(query.before))
    return filters, page
