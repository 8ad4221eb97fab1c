"""edge.security.staffauth: argon2 accounts, lockout and sessions, over the real kiosk store."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from edge.security.staffauth import AccountError, AuthError, AuthPolicy, StaffAuth, StaffStorage

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
#: cheap argon2 parameters keep the tests quick; the default hasher is checked separately
FAST = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[StaffStorage]:
    from edge.store import Store

    with Store(tmp_path / "s.sqlite") as st:
        yield st


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def auth(storage: StaffStorage, clock: Clock) -> StaffAuth:
    return StaffAuth(storage, AuthPolicy(max_failures=3, lockout=timedelta(minutes=15)), clock=clock, hasher=FAST)


def test_the_pin_is_stored_as_an_argon2id_hash_only(storage: StaffStorage, clock: Clock):
    a = StaffAuth(storage, clock=clock)  # the default hasher
    a.add("w01", "Wang Li", "staff", "482913")
    acct = storage.get_staff("w01")
    assert acct is not None and acct.secret_hash.startswith("$argon2id$")
    assert "482913" not in acct.secret_hash
    assert a.authenticate("w01", "482913").staff_id == "w01"


def test_bad_accounts_are_refused(auth: StaffAuth):
    with pytest.raises(AccountError, match="6 to 128"):
        auth.add("w01", "Wang", "staff", "123")
    with pytest.raises(AccountError, match="repeated"):
        auth.add("w01", "Wang", "staff", "000000")
    with pytest.raises(AccountError, match="role"):
        auth.add("w01", "Wang", "admin", "482913")
    with pytest.raises(AccountError, match="staff id"):
        auth.add("../x", "Wang", "staff", "482913")


def test_wrong_pins_lock_the_account_for_a_while(auth: StaffAuth, clock: Clock):
    auth.add("w01", "Wang Li", "staff", "482913")
    for left in (2, 1):
        with pytest.raises(AuthError, match=f"{left} more tries") as e:
            auth.authenticate("w01", "111111")
        assert e.value.kind == "bad"
    with pytest.raises(AuthError, match="locked for 15") as e:
        auth.authenticate("w01", "111111")
    assert e.value.kind == "locked"
    # locked: even the right PIN is refused until the lockout ends
    clock.now += timedelta(minutes=14)
    with pytest.raises(AuthError, match="locked"):
        auth.authenticate("w01", "482913")
    clock.now += timedelta(minutes=1, seconds=1)
    assert auth.authenticate("w01", "482913").failures == 0
    # a good login resets the count: two wrong ones then do not lock
    for _ in range(2):
        with pytest.raises(AuthError):
            auth.authenticate("w01", "111111")
    auth.authenticate("w01", "482913")
    with pytest.raises(AuthError, match="2 more tries"):
        auth.authenticate("w01", "111111")


def test_the_lockout_is_kept_in_the_store_across_processes(storage: StaffStorage, auth: StaffAuth, clock: Clock):
    auth.add("w01", "Wang Li", "staff", "482913")
    for _ in range(3):
        with pytest.raises(AuthError):
            auth.authenticate("w01", "111111")
    other = StaffAuth(storage, clock=clock, hasher=FAST)  # e.g. `meal-edge confirm` while the screen runs
    with pytest.raises(AuthError, match="locked"):
        other.authenticate("w01", "482913")


def test_unknown_ids_get_the_wrong_pin_answer(auth: StaffAuth):
    with pytest.raises(AuthError, match="unknown staff id or wrong PIN") as e:
        auth.authenticate("nobody", "482913")
    assert e.value.kind == "bad"


def test_sessions_expire_when_idle_or_old_and_end_with_the_account(auth: StaffAuth, clock: Clock):
    auth.add("w01", "Wang Li", "staff", "482913")
    token, s = auth.login("w01", "482913")
    assert len(token) >= 40 and s.role == "staff"
    assert auth.session(token) is not None
    assert auth.session(token + "x") is None and auth.session("") is None
    clock.now += timedelta(minutes=4)
    assert auth.session(token) is not None  # used: idle time restarts
    clock.now += timedelta(minutes=4)
    assert auth.session(token) is not None
    clock.now += timedelta(minutes=5)
    assert auth.session(token) is None  # 5 minutes idle
    token, _ = auth.login("w01", "482913")
    for _ in range(12 * 12):
        clock.now += timedelta(minutes=4, seconds=59)
        if auth.session(token) is None:
            break
    assert clock.now - T0 <= timedelta(hours=12, minutes=20)
    token, _ = auth.login("w01", "482913")
    auth.logout(token)
    assert auth.session(token) is None
    token, _ = auth.login("w01", "482913")
    assert auth.remove("w01")
    assert auth.session(token) is None


def test_a_lockout_ends_the_accounts_sessions(auth: StaffAuth):
    auth.add("w01", "Wang Li", "staff", "482913")
    token, _ = auth.login("w01", "482913")
    for _ in range(3):
        with pytest.raises(AuthError):
            auth.authenticate("w01", "111111")
    assert auth.session(token) is None
