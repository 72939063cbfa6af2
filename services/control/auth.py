"""Bearer tokens with roles: viewer reads, operator also acts, admin also changes parameters.

Only each token's SHA-256 is configured (``control.tokens``); a presented token is hashed and
compared in constant time. ``new_token`` makes one for `tradefleet control token`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from libs.common.config import ApiToken, Role

RANK: dict[Role, int] = {"viewer": 0, "operator": 1, "admin": 2}


@dataclass(frozen=True)
class Identity:
    name: str
    role: Role

    def may(self, role: Role) -> bool:
        return RANK[self.role] >= RANK[role]

    @property
    def who(self) -> str:
        """As the audit trail and ctl.* carry it."""
        return f"api:{self.name}"


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return "tf_" + secrets.token_urlsafe(32)


class TokenBook:
    def __init__(self, tokens: list[ApiToken]) -> None:
        self.tokens = list(tokens)

    def identify(self, token: str | None) -> Identity | None:
        """The identity a presented token stands for; None for a missing or unknown one."""
        if not token:
            return None
        presented = digest(token)
        found = None
        for t in self.tokens:  # every entry compared: the time says nothing of which matched
            if hmac.compare_digest(presented, t.token_sha256):
                found = Identity(t.name, t.role)
        return found


def bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None
