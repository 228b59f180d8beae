"""The unfriend policy's rules: which failures are worth trying again, and one revoke id
per grant an unfriending ended."""

from __future__ import annotations

import re

import msgspec
import pytest
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from contracts.errors import (
    BadRequest,
    CommandInProgress,
    CommandReused,
    Conflict,
    Internal,
    Unavailable,
)
from runtime.eventstore import ConcurrencyConflict
from runtime.policies import transient
from runtime.projector import ProjectionLag
from services.sharing.policy import revoke_id

COMMAND_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")  # contracts.identity.CommandId


@pytest.mark.parametrize("err", [
    TimeoutError(), NatsTimeout(), NoRespondersError(), ConnectionResetError(),
    ConcurrencyConflict("evt.sharing.share.x.*", 3, "raced"),
    ProjectionLag("access is at 1, not yet at 9"), Unavailable("no answer"),
    CommandInProgress("running"), Conflict("changed"),
], ids=lambda e: type(e).__name__)
def test_a_failure_that_may_pass_is_tried_again(err: Exception) -> None:
    assert transient(err)


@pytest.mark.parametrize("err", [
    CommandReused("other content"), BadRequest("no"), Internal("bug"), ValueError("bad"),
    msgspec.DecodeError("garbage"),
], ids=lambda e: type(e).__name__)
def test_a_failure_that_never_passes_is_not(err: Exception) -> None:
    assert not transient(err)


def test_every_grant_an_unfriending_ended_has_its_own_revoke_id() -> None:
    grants = [(o, s, f) for o, f in (("a", "b"), ("b", "a")) for s in ("s1", "s2", "s3")]
    ids = [revoke_id(41, *g) for g in grants]
    assert len(set(ids)) == len(grants)
    assert ids == [revoke_id(41, *g) for g in grants]  # a redelivery repeats, never adds
    assert revoke_id(42, *grants[0]) != ids[0]  # a later unfriending is another revoke
    assert all(COMMAND_ID.match(i) for i in ids)
