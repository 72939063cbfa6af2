"""A Counter for per-event paths.

``collections.Counter`` defines ``__delitem__`` in Python, so CPython routes every item
assignment on it (``c[k] += 1`` included) through its slow generic slot: about 5x a dict's on
these machines, and the md-gateway core made five of them per quote. ``Counts`` is a Counter
whose item assignment and deletion are dict's own (C); reading a missing key still gives 0.
The one difference: deleting a missing key raises KeyError, as a dict's does.
"""

from __future__ import annotations

import collections
from typing import TypeVar

K = TypeVar("K")


class Counts(collections.Counter[K]):
    __slots__ = ()
    __setitem__ = dict.__setitem__
    __delitem__ = dict.__delitem__  # type: ignore[assignment]
