"""Signing keys rotate without logging anyone out: every token names its key; services
accept the current key and the previous ones they are given, and nothing else."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest

from contracts.identity import InvalidToken
from runtime.tokens import Signer, Verifier, key_id, new_private_key, public_key_of

NOW = datetime.now(UTC)


def session(signer: Signer) -> str:
    token, _ = signer.issue(member_id="m-1", kind="session", now=NOW,
                            ttl=timedelta(hours=1), pv=0, sid="s-1", via="password")
    return token


def test_a_token_names_the_key_that_signed_it() -> None:
    private = new_private_key()
    claims = Verifier(public_key_of(private)).verify(session(Signer(private)),
                                                     kind="session", now=NOW)
    assert claims.kid == key_id(public_key_of(private)) and claims.sid == "s-1"


def test_after_a_rotation_tokens_of_the_previous_key_still_verify_until_it_is_dropped() -> None:
    old, new = new_private_key(), new_private_key()
    rotated = Verifier(public_key_of(new), previous=[public_key_of(old)])
    assert rotated.verify(session(Signer(old)), kind="session", now=NOW).sub == "m-1"
    assert rotated.verify(session(Signer(new)), kind="session", now=NOW).sub == "m-1"
    with pytest.raises(InvalidToken):
        Verifier(public_key_of(new)).verify(session(Signer(old)), kind="session", now=NOW)


def test_a_token_that_names_an_accepted_key_but_was_signed_by_another_is_refused() -> None:
    accepted, attacker = new_private_key(), new_private_key()
    forged = session(Signer(attacker))
    body, _, signature = forged.partition(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims["kid"] = key_id(public_key_of(accepted))
    relabelled = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    with pytest.raises(InvalidToken):
        Verifier(public_key_of(accepted)).verify(f"{relabelled}.{signature}", kind="session",
                                                  now=NOW)
