"""sync's domain, given events, when deciding, then events or a coded error."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts.storage import VersionInfo
from contracts.sync import (
    DeviceRevoked,
    DeviceRevokedError,
    LeaseBroken,
    LeaseExpired,
    LeaseHeld,
    LeaseNotHeld,
    LeaseReleased,
    LeaseRenewed,
    LeaseTaken,
    NoLease,
    NoSuchDevice,
    SetYearEvent,
    SyncOff,
    SyncTurnedOff,
    SyncTurnedOn,
    VersionSynced,
)
from services.sync import domain
from services.sync.domain import Acting, Device

NOW = datetime(2026, 11, 30, 9, 12, tzinfo=UTC)
MIN = timedelta(minutes=1)
MEMBER = "m1"
OFFICE = Device(device_id="d-office", member_id=MEMBER, name="办公室电脑")
HOME = Device(device_id="d-home", member_id=MEMBER, name="家里电脑")


def acting(device: Device = OFFICE, at: datetime = NOW) -> Acting:
    return Acting(set_year_id="sy", member_id=MEMBER, set_id="s1", year=2024, device=device,
                  at=at)


def on(current: str | None = None) -> SyncTurnedOn:
    return SyncTurnedOn(**acting().head(), set_name="123", current=current,
                        current_at=NOW - MIN if current else None)


def taken(device: Device = OFFICE, until: datetime = NOW + 5 * MIN) -> LeaseTaken:
    return LeaseTaken(**acting(device, NOW - MIN).head(), lease_id="l1",
                      device_name=device.name, until=until)


def version(vid: str, base: str | None, *, by: str = MEMBER,
            at: datetime = NOW) -> VersionInfo:
    return VersionInfo(version_id=vid, set_id="s1", set_name="123", year=2024, period=1,
                       remark="", uploader_id=by, uploaded_at=at, size=1, sha256="0" * 64,
                       base_version=base)


def types(events: list[SetYearEvent]) -> list[str]:
    return [type(e).__name__ for e in events]


# ---- devices ----------------------------------------------------------------------------

def test_given_another_members_device_when_used_then_no_such_device() -> None:
    with pytest.raises(NoSuchDevice):
        domain.usable(OFFICE, "someone-else")


def test_given_a_revoked_device_when_used_then_device_revoked() -> None:
    revoked = domain.evolve_device(OFFICE, DeviceRevoked(device_id=OFFICE.device_id,
                                                         member_id=MEMBER, at=NOW))
    with pytest.raises(DeviceRevokedError):
        domain.usable(revoked, MEMBER)
    assert domain.decide_revoke(revoked, member_id=MEMBER, by_device=None, at=NOW) == []


# ---- the lease --------------------------------------------------------------------------

def test_given_sync_off_when_taking_then_sync_off() -> None:
    with pytest.raises(SyncOff):
        domain.decide_take(domain.SetYear(), acting(), lease_id="l1", ttl=MIN)


def test_given_no_lease_when_taking_then_taken_until_now_plus_ttl() -> None:
    [event] = domain.decide_take(domain.fold([on()]), acting(), lease_id="l1", ttl=5 * MIN)
    assert isinstance(event, LeaseTaken)
    assert (event.device_id, event.until, event.device_name) == (
        OFFICE.device_id, NOW + 5 * MIN, "办公室电脑")


def test_given_a_live_lease_of_another_device_when_taking_then_lease_held() -> None:
    with pytest.raises(LeaseHeld) as held:
        domain.decide_take(domain.fold([on(), taken()]), acting(HOME), lease_id="l2", ttl=MIN)
    assert held.value.details["holder_name"] == "办公室电脑"


def test_given_a_lease_past_its_end_when_another_takes_then_expired_first() -> None:
    state = domain.fold([on(), taken(until=NOW)])
    events = domain.decide_take(state, acting(HOME), lease_id="l2", ttl=MIN)
    assert types(events) == ["LeaseExpired", "LeaseTaken"]
    expired = events[0]
    assert isinstance(expired, LeaseExpired)
    assert (expired.device_id, expired.until) == (OFFICE.device_id, NOW)


def test_given_its_own_live_lease_when_taking_again_then_renewed() -> None:
    events = domain.decide_take(domain.fold([on(), taken()]), acting(), lease_id="l2",
                                ttl=MIN)
    assert types(events) == ["LeaseRenewed"]


def test_given_an_expired_own_lease_when_renewing_then_lease_not_held() -> None:
    with pytest.raises(LeaseNotHeld):
        domain.decide_renew(domain.fold([on(), taken(until=NOW)]), acting(), ttl=MIN)


def test_given_a_renewal_when_folding_then_the_lease_lasts_longer() -> None:
    renewed = LeaseRenewed(**acting().head(), lease_id="l1", until=NOW + 9 * MIN)
    state = domain.fold([on(), taken(), renewed])
    assert domain.live(state, NOW + 8 * MIN) is not None
    assert domain.live(state, NOW + 9 * MIN) is None


def test_given_a_live_lease_when_another_device_breaks_it_then_broken_by_it() -> None:
    [event] = domain.decide_break(domain.fold([on(), taken()]), acting(HOME))
    assert isinstance(event, LeaseBroken)
    assert (event.device_id, event.by_device) == (OFFICE.device_id, HOME.device_id)


def test_given_no_live_lease_when_breaking_then_no_lease() -> None:
    with pytest.raises(NoLease):
        domain.decide_break(domain.fold([on(), taken(until=NOW)]), acting(HOME))


def test_given_the_holder_when_releasing_then_released_and_free() -> None:
    state = domain.fold([on(), taken()])
    events = domain.decide_release(state, acting())
    assert types(events) == ["LeaseReleased"]
    assert isinstance(events[0], LeaseReleased)
    assert domain.fold([on(), taken(), *events]).lease is None


def test_given_another_lease_when_the_sweeper_expires_an_old_one_then_nothing() -> None:
    state = domain.fold([on(), taken(until=NOW)])
    assert domain.decide_expire(state, acting(), "other-lease") == []
    assert types(domain.decide_expire(state, acting(), "l1")) == ["LeaseExpired"]


def test_given_another_devices_live_lease_when_turning_off_then_lease_held() -> None:
    with pytest.raises(LeaseHeld):
        domain.decide_turn_off(domain.fold([on(), taken()]), acting(HOME))
    events = domain.decide_turn_off(domain.fold([on(), taken()]), acting())
    assert types(events) == ["LeaseReleased", "SyncTurnedOff"]
    assert isinstance(events[-1], SyncTurnedOff)


# ---- versions ---------------------------------------------------------------------------

@pytest.mark.parametrize("current, base, conflict, after", [
    (None, None, False, "v9"), ("v1", "v1", False, "v9"), ("v1", "v0", True, "v1"),
    ("v1", None, True, "v1")],
    ids=["first version", "on the current", "on an older one", "on none"])
def test_given_a_current_version_when_a_sync_lands_then_a_conflict_unless_based_on_it(
        current: str | None, base: str | None, conflict: bool, after: str) -> None:
    [event] = domain.decide_synced(domain.fold([on(current)]), acting(),
                                   version("v9", base), None)
    assert isinstance(event, VersionSynced)
    assert (event.conflict, event.current) == (conflict, after)


def test_given_a_conflict_when_folding_then_the_current_version_and_device_stay() -> None:
    first = domain.decide_synced(domain.fold([on()]), acting(), version("v1", None), None)
    state = domain.fold([on(), *first])
    late = domain.decide_synced(state, acting(HOME), version("v2", None), None)
    after = domain.fold([on(), *first, *late])
    assert (after.current, after.current_device) == ("v1", OFFICE.device_id)
    assert after.synced == {OFFICE.device_id: "v1", HOME.device_id: "v2"}


def test_given_a_sharee_upload_back_when_a_sync_on_the_old_base_lands_then_a_conflict(
        ) -> None:
    state = domain.fold([on("v1")])
    sharee = version("v2", "v1", by="a-friend", at=NOW)
    outside = domain.moved_on(state, [sharee, version("v1", None, at=NOW - MIN)], MEMBER)
    assert outside == sharee
    [event] = domain.decide_synced(state, acting(), version("v3", "v1"), outside)
    assert isinstance(event, VersionSynced)
    assert (event.conflict, event.current) == (True, "v2")


# ---- a fold invariant -----------------------------------------------------------------

STEPS = st.lists(st.tuples(st.sampled_from(["take", "renew", "release", "break", "expire"]),
                           st.sampled_from([OFFICE, HOME]), st.integers(0, 120)),
                 max_size=40)


@given(STEPS)
def test_whatever_the_devices_do_a_live_lease_has_one_holder_who_took_it(
        steps: list[tuple[str, Device, int]]) -> None:
    """Decisions at moving times by two devices: a lease is taken only when no other
    device's is live, renewed or released only by its live holder, and the lease the fold
    holds is the last one taken."""
    history: list[SetYearEvent] = [on()]
    at = NOW
    for n, (kind, device, seconds) in enumerate(steps):
        at += timedelta(seconds=seconds)
        state, act = domain.fold(history), acting(device, at)
        try:
            events = decide(kind, state, act, f"l{n}")
        except (LeaseHeld, LeaseNotHeld, NoLease):
            continue
        held = domain.live(state, at)
        for event in events:
            if isinstance(event, LeaseTaken):
                assert held is None or held.device_id == device.device_id
            if isinstance(event, LeaseRenewed | LeaseReleased):
                assert held is not None and held.device_id == event.device_id
        history += events
    lease = domain.fold(history).lease
    taken = [e for e in history if isinstance(e, LeaseTaken)]
    assert lease is None or lease.lease_id == taken[-1].lease_id


def decide(kind: str, state: domain.SetYear, act: Acting, lease_id: str
           ) -> list[SetYearEvent]:
    match kind:
        case "take":
            return domain.decide_take(state, act, lease_id=lease_id, ttl=MIN)
        case "renew":
            return domain.decide_renew(state, act, ttl=MIN)
        case "release":
            return domain.decide_release(state, act)
        case "break":
            return domain.decide_break(state, act)
    return domain.decide_expire(state, act, state.lease.lease_id if state.lease else "")


# ---- erasure ------------------------------------------------------------------------------

def test_given_a_lease_held_when_the_member_is_erased_then_released_and_off_once() -> None:
    state = domain.fold([on(), taken()])
    erased = acting(Device())
    events = domain.decide_erase(state, erased)
    assert types(events) == ["LeaseReleased", "SyncTurnedOff"]
    assert [e.device_id for e in events] == ["", ""]  # no device acted
    again = domain.fold([on(), taken(), *events])
    assert domain.decide_erase(again, erased) == []


def test_given_a_lease_that_ran_out_when_the_member_is_erased_then_it_expired() -> None:
    state = domain.fold([on(), taken(until=NOW - MIN)])
    events = domain.decide_erase(state, acting(Device()))
    assert types(events) == ["LeaseExpired", "SyncTurnedOff"]
    assert events[0].device_id == OFFICE.device_id


def test_given_sync_off_when_the_member_is_erased_then_nothing() -> None:
    assert domain.decide_erase(domain.fold([]), acting(Device())) == []
