"""API keys: ``chk_<key_id>_<secret>``, scrypt-hashed, checked against the team.

The team aggregate is the source of truth for keys, roles and revocation. The
API's event store keeps its cached teams current from the event log's
notifications (infra.aggregate_freshness): a key revoked through one API
process stops working there at once, and on every other process within
milliseconds, when the notification arrives (or at the next request, if that
process is not following the log). scrypt
runs once per key and process: a verified secret is remembered by a SHA-256
digest, which is cheap to compare and useless to anyone who reads memory
hoping for the secret itself.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from uuid import UUID

from aggregates.base import Actor
from aggregates.errors import UnknownKey
from aggregates.team import Team
from commands.errors import Unauthenticated
from commands.ports import EventStorePort

__all__ = [
    "Authenticated",
    "Authenticator",
    "NewKey",
    "hash_secret",
    "new_key",
    "parse_key",
    "verify_secret",
]

_KEY = re.compile(r"^chk_([a-z0-9]{16})_([A-Za-z0-9_-]{20,128})$")
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}
# scrypt takes 16 MiB and tens of milliseconds per check, outside the GIL: 32
# first requests at once took an API process to ~450 MB (bench B1), and wrong
# secrets, never remembered, could do so at will. At most this many at once.
SCRYPT_AT_ONCE = 4
_SCRYPT_SLOTS = threading.BoundedSemaphore(SCRYPT_AT_ONCE)
# Keys whose team is remembered; past it the memory starts again (a bound, not LRU).
MAX_CACHED_KEYS = 100_000


@dataclass(frozen=True, slots=True)
class Authenticated:
    actor: Actor
    # The team as it was when the key was checked: a command in the same request
    # decides on it rather than loading it again.
    team: Team


@dataclass(frozen=True, slots=True)
class NewKey:
    key_id: str
    secret: str

    @property
    def token(self) -> str:
        return f"chk_{self.key_id}_{self.secret}"


def new_key() -> NewKey:
    return NewKey(key_id=secrets.token_hex(8), secret=secrets.token_urlsafe(32))


def parse_key(token: str) -> tuple[str, str]:
    match = _KEY.match(token)
    if match is None:
        raise Unauthenticated("the API key is malformed")
    return match.group(1), match.group(2)


def hash_secret(secret: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, **_SCRYPT, dklen=32)
    encode = base64.b64encode
    return f"scrypt${_SCRYPT['n']}${encode(salt).decode()}${encode(digest).decode()}"


def verify_secret(secret: str, stored: str) -> bool:
    try:
        scheme, n, salt_b64, digest_b64 = stored.split("$")
        salt, expected = base64.b64decode(salt_b64), base64.b64decode(digest_b64)
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    params = {**_SCRYPT, "n": int(n)}
    actual = hashlib.scrypt(secret.encode(), salt=salt, **params, dklen=len(expected))
    return hmac.compare_digest(actual, expected)


class Authenticator:
    def __init__(self, store: EventStorePort) -> None:
        self._store = store
        self._verified: dict[str, bytes] = {}
        # A key belongs to one team for ever (revocation is read from the team
        # itself), so the index is asked once per key, not per request.
        self._team_of_key: dict[str, UUID] = {}
        self._lock = threading.Lock()

    def authenticate(self, token: str) -> Authenticated:
        """May wait: for the database (a key or team not in memory) or scrypt."""
        key_id, secret = parse_key(token)
        team_id = self._team_of(key_id)
        team = self._store.get(team_id, Team) if team_id is not None else None
        signed = self._admit(team, key_id, secret, self._secret_ok)
        assert signed is not None  # _secret_ok always decides
        return signed

    def authenticate_from_memory(self, token: str) -> Authenticated | None:
        """As ``authenticate``, but from what this process already holds and
        without waiting for anything (so an event loop may call it): None
        where ``authenticate`` would have to wait. A refusal it can decide
        (unknown to the team, revoked, no role) it raises at once."""
        key_id, secret = parse_key(token)
        team_id = self._team_of_key.get(key_id)
        if team_id is None:
            return None
        team = self._store.get_if_current(team_id, Team)
        if team is None:
            return None
        return self._admit(team, key_id, secret, self._secret_known)

    def _admit(
        self,
        team: Team | None,
        key_id: str,
        secret: str,
        verify: Callable[[str, str, str], bool | None],
    ) -> Authenticated | None:
        """The key's member, if ``verify`` accepts the secret; None if it cannot tell."""
        if team is None:
            raise _refused()
        try:
            key = team.key(key_id)
        except UnknownKey:
            raise _refused() from None
        role = team.role_of(key.user_id)
        if key.revoked or role is None:
            raise _refused()
        verified = verify(key_id, secret, key.secret_hash)
        if verified is None:
            return None
        if not verified:
            raise _refused()
        actor = Actor(user_id=key.user_id, role=role, team_id=team.id, key_id=key_id)
        return Authenticated(actor, team)

    def _team_of(self, key_id: str) -> UUID | None:
        team_id = self._team_of_key.get(key_id)
        if team_id is None:
            team_id = self._store.team_of_key(key_id)
            if team_id is not None:
                with self._lock:
                    if len(self._team_of_key) >= MAX_CACHED_KEYS:
                        self._team_of_key.clear()
                    self._team_of_key[key_id] = team_id
        return team_id

    def _secret_known(self, key_id: str, secret: str, secret_hash: str) -> bool | None:
        """True if this secret was verified before; None if only scrypt can tell."""
        with self._lock:
            known = self._verified.get(key_id)
        if known is not None and hmac.compare_digest(known, _digest(key_id, secret, secret_hash)):
            return True
        return None

    def _secret_ok(self, key_id: str, secret: str, secret_hash: str) -> bool:
        if self._secret_known(key_id, secret, secret_hash):
            return True
        with _SCRYPT_SLOTS:
            verified = verify_secret(secret, secret_hash)
        if not verified:
            return False
        with self._lock:
            self._verified[key_id] = _digest(key_id, secret, secret_hash)
        return True


def _refused() -> Unauthenticated:
    # Made when refusing only: most requests are admitted.
    return Unauthenticated("the API key is not valid")


def _digest(key_id: str, secret: str, secret_hash: str) -> bytes:
    """What a verified secret is remembered by."""
    return hashlib.sha256(f"{key_id}:{secret_hash}:{secret}".encode()).digest()
