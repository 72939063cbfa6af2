"""Which tickers a headline is about, what kind of event it reports, and whether it is a story
already seen from another source. Pure functions and small state; no I/O.

Tickers come from three places: the source's own tags (IB's news line is per symbol), cash tags
($IBM), and a configured map of symbols to company names and aliases ("International Business
Machines", "Big Blue"). A bare upper-case word counts only when it is a configured symbol: "IT",
"A" and "ALL" are words far more often than tickers.

Event tags are keyword rules (regular expressions, case-insensitive): transparent, cheap, and
easy to extend per desk in configuration.
"""

from __future__ import annotations

import collections
import hashlib
import re
from collections.abc import Iterable, Mapping

CASHTAG = re.compile(r"(?<![\w$])\$([A-Za-z]{1,5}(?:\.[A-Za-z])?)\b")

# The default company names for the symbols the sample days trade, and some large caps; a desk
# extends or replaces it with sentiment.companies.
DEFAULT_COMPANIES: dict[str, list[str]] = {
    "IBM": ["International Business Machines", "Big Blue"],
    "BAC": ["Bank of America", "BofA"],
    "AIG": ["American International Group"],
    "AAPL": ["Apple"],
    "MSFT": ["Microsoft"],
    "AMZN": ["Amazon"],
    "GOOG": ["Alphabet", "Google"],
    "SPY": ["S&P 500 ETF"],
}

# One tag per rule; a rule is alternatives joined with "|", matched case-insensitively.
EVENT_RULES: dict[str, list[str]] = {
    "earnings": [
        r"\bearnings\b",
        r"\beps\b",
        r"quarterly (?:results|profit|loss|revenue)",
        r"\bq[1-4] (?:results|profit|loss|sales|revenue)",
        r"(?:beats|misses|tops|lags) (?:\w+ )?(?:estimates|expectations|views|consensus)",
    ],
    "guidance": [
        r"\bguidance\b",
        r"\boutlook\b",
        r"\bforecasts?\b",
        r"(?:raises|lowers|cuts|reaffirms|boosts) (?:\w+ )?(?:fy|full[- ]year|year)",
    ],
    "upgrade": [r"\bupgrade[sd]?\b", r"raised to (?:buy|outperform|overweight)"],
    "downgrade": [r"\bdowngrade[sd]?\b", r"cut to (?:sell|underperform|underweight|neutral)"],
    "price_target": [r"price target", r"\bpt (?:raised|lowered|cut|to)\b"],
    "m&a": [
        r"\bacquir(?:e|es|ed|ing)\b",
        r"\bacquisition\b",
        r"\bmerger?\b",
        r"\btakeover\b",
        r"\bbuyout\b",
        r"\b(?:agrees?|deal|offers?|plans?|bids?|moves?) to (?:buy|acquire)\b",
        r"\bbid for\b",
    ],
    "fda": [r"\bfda\b", r"clinical trial", r"\bphase (?:1|2|3|i|ii|iii)\b", r"\bdrug approval\b"],
    "offering": [r"\boffering\b", r"\bsecondary\b", r"\bdilution\b", r"priced .{0,40}\bshares\b", r"\bipo\b"],
    "lawsuit": [
        r"\blawsuit\b",
        r"\bsues?\b",
        r"\bsued\b",
        r"class action",
        r"\blitigation\b",
        r"\bsec charges\b",
        r"\bsettle(?:s|d|ment)?\b",
    ],
    "dividend": [r"\bdividend\b"],
    "buyback": [r"\bbuyback\b", r"\brepurchase\b"],
    "bankruptcy": [r"\bbankrupt(?:cy)?\b", r"chapter 11"],
    "management": [r"\bceo\b", r"\bcfo\b", r"steps down", r"\bresign(?:s|ed)?\b", r"\bappoint(?:s|ed)?\b"],
    "halt": [r"trading halt", r"\bhalted\b"],
}

# A company named as the source of an opinion is not what the headline is about: "Dow price
# target raised at BofA Merrill Lynch" is about Dow. Text right before or after a name match.
ATTRIBUTION_BEFORE = re.compile(r"(?:\bat|\bby|\bfrom|\bsays|\bper|according to|\bvia)\s+$", re.IGNORECASE)
ATTRIBUTION_AFTER = re.compile(
    r"^\s*(?:merrill|securities|global research|research|analysts?\b|says|warns|strategists?)",
    re.IGNORECASE,
)


class Tagger:
    def __init__(
        self,
        companies: Mapping[str, Iterable[str]] | None = None,
        rules: Mapping[str, list[str]] | None = None,
    ) -> None:
        companies = DEFAULT_COMPANIES if companies is None else companies
        self.symbols = {s.upper() for s in companies}
        names: list[tuple[str, str]] = []
        for symbol, aliases in companies.items():
            names += [(alias, symbol.upper()) for alias in aliases]
        # Longest first, so "Bank of America Merrill" is not cut short by a shorter alias.
        names.sort(key=lambda pair: -len(pair[0]))
        self._names = [(re.compile(rf"\b{re.escape(a)}\b", re.IGNORECASE), s) for a, s in names]
        self._bare = re.compile(r"\b([A-Z]{1,5})\b")
        self._rules = {
            tag: re.compile("|".join(alternatives), re.IGNORECASE)
            for tag, alternatives in (rules or EVENT_RULES).items()
        }

    def tickers(self, text: str, given: Iterable[str] = ()) -> list[str]:
        found = [s.upper() for s in given]
        found += [m.upper() for m in CASHTAG.findall(text)]
        found += [s for rx, s in self._names if any(self._about(text, m) for m in rx.finditer(text))]
        found += [w for w in self._bare.findall(text) if w in self.symbols]
        return list(dict.fromkeys(found))  # first-seen order, no repeats

    @staticmethod
    def _about(text: str, match: re.Match[str]) -> bool:
        before, after = text[max(0, match.start() - 24) : match.start()], text[match.end() : match.end() + 24]
        tail = re.sub(r"https?://\S+|\u2026", "", text[match.end() :]).strip()  # links, ellipses
        credit = not tail and re.search(r"[-\u2013\u2014|]\s*$", before)  # "... - BofA"
        return not (credit or ATTRIBUTION_BEFORE.search(before) or ATTRIBUTION_AFTER.search(after))

    def events(self, text: str) -> list[str]:
        return [tag for tag, rx in self._rules.items() if rx.search(text)]


_WORD = re.compile(r"[a-z0-9]+")
_NOISE = {
    "the",
    "a",
    "an",
    "of",
    "to",
    "in",
    "on",
    "for",
    "and",
    "update",
    "breaking",
    "reuters",
    "bloomberg",
}


def story_key(headline: str) -> tuple[str, frozenset[str]]:
    """An exact key (normalized words) and the word set for near-duplicate matching."""
    words = [w for w in _WORD.findall(headline.lower()) if w not in _NOISE]
    return hashlib.blake2b(" ".join(words).encode(), digest_size=12).hexdigest(), frozenset(words)


class StoryDeduper:
    """The same story from several sources (IB's providers, a file, a webhook) is scored once.

    A story is a duplicate when it names a ticker a recent story named (or neither names one) and
    its normalized words equal, or overlap by ``min_jaccard``, that story's, within ``window_ns``
    (event time). 0.75 keeps a wire's added "in late trading" the same story; the tickers keep a
    wire template ("X upgraded to buy at Y") about two companies two stories. Near matches are
    checked against the last ``max_recent`` stories only (a linear scan: about 1 us each), so
    the cost per headline stays bounded."""

    def __init__(self, window_ns: int, min_jaccard: float = 0.75, max_recent: int = 2_000) -> None:
        self.window_ns = window_ns
        self.min_jaccard = min_jaccard
        self.recent: collections.deque[tuple[int, str, frozenset[str], frozenset[str]]] = collections.deque(
            maxlen=max_recent
        )
        self.exact: dict[str, int] = {}

    def seen(self, ts_ns: int, headline: str, tickers: Iterable[str] = ()) -> bool:
        self._forget(ts_ns)
        names = frozenset(tickers)
        key, words = story_key(headline)
        key = f"{key}:{','.join(sorted(names))}"
        if key in self.exact:
            return True
        for _, _, other_names, other in self.recent:
            if (names & other_names) or (not names and not other_names):
                union = len(words | other)
                if union and len(words & other) / union >= self.min_jaccard:
                    return True
        self.exact[key] = ts_ns
        self.recent.append((ts_ns, key, names, words))
        return False

    def release(self, headline: str, tickers: Iterable[str] = ()) -> None:
        """Forget a story that was admitted but not scored (its batch failed): when it is
        delivered again it is scored, not taken for its own duplicate."""
        key, _ = story_key(headline)
        key = f"{key}:{','.join(sorted(frozenset(tickers)))}"
        self.exact.pop(key, None)
        kept = [entry for entry in self.recent if entry[1] != key]
        self.recent.clear()
        self.recent.extend(kept)

    def _forget(self, now: int) -> None:
        while self.recent and now - self.recent[0][0] > self.window_ns:
            _, key, _, _ = self.recent.popleft()
            if self.exact.get(key, now) <= now - self.window_ns:
                self.exact.pop(key, None)
        if len(self.exact) > 4 * (self.recent.maxlen or 1):
            self.exact = {k: t for k, t in self.exact.items() if now - t <= self.window_ns}
