"""deploy/nats/accounts.conf is what the declarations render, and what they render is
least privilege: allow-lists of exact operations, each context's own events, nothing that
no account exports."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from deploy.nats import permissions
from deploy.nats.permissions import CALLS, GATEWAYS, OPERATOR, User, exports, render, users
from runtime.app import Service
from services.registry import SERVICES

ROOT = Path(__file__).resolve().parents[2]
BY_NAME = {u.name: u for u in users()}


def covers(pattern: str, subject: str) -> bool:
    """Whether NATS subject filter ``pattern`` matches every subject ``subject`` (itself
    maybe a filter) matches."""
    ps, ss = pattern.split("."), subject.split(".")
    for i, p in enumerate(ps):
        if p == ">":
            return len(ss) > i
        if i >= len(ss) or (p != "*" and p != ss[i]) or (p == "*" and ss[i] == ">"):
            return False
    return len(ps) == len(ss)


def requests(user: User) -> set[str]:
    """The operations' subjects among what ``user`` may publish."""
    served = {permissions.subject_of(s.name, op) for s in SERVICES
              for op in permissions.served(s)}
    return {s for s in user.allowed() if s in served}


def test_the_shipped_accounts_are_what_the_declarations_render() -> None:
    shipped = (ROOT / "deploy" / "nats" / "accounts.conf").read_text()
    assert shipped == render(), (
        "run: python -m deploy.nats.permissions > deploy/nats/accounts.conf")


@pytest.mark.parametrize("audience", GATEWAYS)
def test_a_gateway_calls_exactly_the_operations_declared_for_its_audience(
        audience: str) -> None:
    declared = {permissions.subject_of(s.name, op) for s in SERVICES
                for op in permissions.served(s) if audience in op.audience}
    assert requests(BY_NAME[audience]) == declared
    wildcards = {s for s in BY_NAME[audience].allowed() if "*" in s or ">" in s}
    assert wildcards == {"$KV.LIMITS.>", "$JS.API.DIRECT.GET.KV_LIMITS.>", "_INBOX_operator.>"}


def test_only_the_wechat_gateway_logs_in_by_wechat_and_no_gateway_reaches_inside() -> None:
    assert "identity.login_wechat" in requests(BY_NAME["wechat"])
    assert "identity.login_wechat" not in requests(BY_NAME["desktop"])
    for gateway in GATEWAYS:
        assert not {"sharing.check", "storage.set_quota"} & requests(BY_NAME[gateway])
        assert not [s for s in BY_NAME[gateway].allowed() if s.startswith("admin.")]


def test_the_member_center_pages_call_only_what_the_wechat_gateway_may() -> None:
    source = (ROOT / "gateway" / "pages.py").read_text()
    called = set(re.findall(r"self\.(identity|social|storage|sharing)\.(\w+)\(", source))
    assert len(called) >= 10, called  # the pattern still finds the pages' calls
    assert {f"{c}.{op}" for c, op in called} <= requests(BY_NAME["wechat"])


@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.name)
def test_a_service_writes_only_its_own_events_and_records(service: Service) -> None:
    name = service.name
    allowed = BY_NAME[name].allowed()
    assert [s for s in allowed if s.startswith("evt.")] == [f"evt.{name}.>"]
    assert [s for s in allowed if s.startswith("cmd.")] == [f"cmd.{name}.>"]
    # The one bucket a service touches: members' data keys (read and made, on sealing).
    assert [s for s in allowed if s.startswith("$KV.")] == ["$KV.PERSONAL.>"]
    assert not [s for s in allowed if s.startswith(("$JS.API.STREAM.CREATE",
                                                     "$JS.API.STREAM.DELETE",
                                                     "$JS.API.STREAM.PURGE",
                                                     "$JS.API.STREAM.UPDATE"))]


@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.name)
def test_a_service_answers_only_its_callers_inboxes(service: Service) -> None:
    name = service.name
    inboxes = {s for s in BY_NAME[name].allowed() if s.startswith("_INBOX")}
    expected = {permissions.inbox(u) for u in [*permissions.callers(service), OPERATOR, name]}
    assert inboxes == expected
    assert "_INBOX.>" not in inboxes and not any(s == ">" for s in BY_NAME[name].allowed())


def test_each_operation_is_served_by_its_service_alone() -> None:
    for service in SERVICES:
        for op in permissions.served(service):
            subject = permissions.subject_of(service.name, op)
            listeners = [u.name for u in users() if any(covers(p, subject)
                                                        for p in u.listens())]
            assert listeners == [service.name], (subject, listeners)


def test_service_calls_are_granted_and_answered() -> None:
    for caller, ops in CALLS.items():
        assert caller in {s.name for s in SERVICES}
        for op in ops:
            # declared for services, or a members' operation called on a member's behalf
            assert op.audience & {"services", *GATEWAYS}, op
            context = permissions.context_of(op)
            assert permissions.subject_of(context, op) in requests(BY_NAME[caller])
            callee = next(s for s in SERVICES if s.name == context)
            assert caller in permissions.callers(callee), (caller, op)


def test_sync_calls_storage_for_its_uploads_and_storage_answers_it() -> None:
    assert {"storage.begin_upload", "storage.complete_upload", "storage.versions",
            "storage.download"} <= requests(BY_NAME["sync"])
    assert "_INBOX_sync.>" in BY_NAME["storage"].allowed()
    assert "_INBOX_sync.>" not in BY_NAME["sharing"].allowed()


def test_a_service_may_not_touch_another_services_consumers() -> None:
    for service in SERVICES:
        denied = BY_NAME[service.name].denied()
        for other in SERVICES:
            for consumer in permissions.consumers(other.name):
                delete = f"$JS.API.CONSUMER.DELETE.EVENTS.{consumer}"
                assert (delete in denied) == (other.name != service.name
                                              and service.read_model is not None)
    # identity keeps no read model: the consumers of its policies alone, by name.
    assert [s for s in BY_NAME["identity"].allowed() if "CONSUMER" in s] == [
        f"$JS.API.CONSUMER.{verb}.EVENTS.proj_identity_erasure_policy"
        for verb in ("DURABLE.CREATE", "DELETE", "MSG.NEXT")]


def test_the_operator_reads_replays_and_creates_but_writes_nothing() -> None:
    allowed = BY_NAME[OPERATOR].allowed()
    assert not [s for s in allowed if s.startswith(("evt.", "cmd.", "$KV.", "_INBOX"))
                or any(verb in s for verb in (".DELETE.", ".PURGE.", ".UPDATE.",
                                              "DURABLE", "MSG.NEXT", "$JS.ACK"))]
    assert {"admin.sharing.replay", "storage.set_quota"} <= set(allowed)
    assert BY_NAME[OPERATOR].listens() == [permissions.inbox(OPERATOR)]


def test_everything_granted_outside_app_is_exported_to_it() -> None:
    # A grant no account exports would be silently unreachable, not refused.
    reachable = [e.subject for e in exports()]
    inside_app = ("_INBOX", "$SRV.", "admin.")
    served = {permissions.subject_of(s.name, op) for s in SERVICES
              for op in permissions.served(s)}
    for user in users():
        for subject in user.allowed():
            if subject.startswith(inside_app) or subject in served:
                continue
            assert any(covers(e, subject) for e in reachable), (user.name, subject)


def test_every_export_is_granted_to_someone() -> None:
    granted = [s for u in users() for s in u.allowed()]
    for export in exports():
        if export.kind == "stream":
            continue
        assert any(covers(export.subject, s) for s in granted), export.subject


@pytest.mark.parametrize(("pattern", "subject", "covered"), [
    ("evt.>", "evt.social.>", True),
    ("evt.social.>", "evt.>", False),
    ("$JS.API.CONSUMER.DELETE.EVENTS.*", "$JS.API.CONSUMER.DELETE.EVENTS.x", True),
    ("$JS.API.CONSUMER.DELETE.EVENTS.*", "$JS.API.CONSUMER.DELETE.EVENTS.x.y", False),
    ("a.*", "a.>", False),
    ("a.b", "a.b", True),
])
def test_covers(pattern: str, subject: str, covered: bool) -> None:
    assert covers(pattern, subject) is covered
