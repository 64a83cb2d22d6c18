"""scrypt checks are bounded: each takes 16 MiB and tens of milliseconds, and
wrong secrets are never remembered, so many at once must queue."""

from __future__ import annotations

import threading

import pytest

import commands.auth
from commands.auth import SCRYPT_AT_ONCE, Authenticator
from commands.errors import Unauthenticated
from infra.devstack.processes import wait_until
from tests.unit.auth_support import TeamStore, team_with_owner_key


def test_no_more_than_a_few_secrets_are_checked_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    team, _, key_id = team_with_owner_key()
    inside, most, release = [0], [0], threading.Event()
    lock = threading.Lock()

    def slow_verify(secret: str, stored: str) -> bool:
        with lock:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        release.wait(timeout=10)
        with lock:
            inside[0] -= 1
        return False

    monkeypatch.setattr(commands.auth, "verify_secret", slow_verify)
    authenticator = Authenticator(TeamStore(team, key_id))  # type: ignore[arg-type]
    refused: list[bool] = []

    def sign_in(n: int) -> None:
        try:
            authenticator.authenticate(f"chk_{key_id}_wrong-secret-{n:016d}")
        except Unauthenticated:
            refused.append(True)

    threads = [threading.Thread(target=sign_in, args=(n,)) for n in range(3 * SCRYPT_AT_ONCE)]
    for thread in threads:
        thread.start()
    wait_until(lambda: inside[0] == SCRYPT_AT_ONCE, timeout=10, what="the slots filled")
    threads[-1].join(timeout=0.2)  # bounded: the rest must still be queued
    assert most[0] == SCRYPT_AT_ONCE
    release.set()
    for thread in threads:
        thread.join(timeout=10)
    assert len(refused) == 3 * SCRYPT_AT_ONCE
    assert most[0] == SCRYPT_AT_ONCE
