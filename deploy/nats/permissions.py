"""The production NATS accounts and users (``deploy/nats/accounts.conf``), derived from the
declarations: each operation's audience, each service's operations, read model and
projectors, and the calls services make on each other.

After adding an operation, a service, a projector or a service-to-service call, run
``python -m deploy.nats.permissions > deploy/nats/accounts.conf`` and
``python -m deploy.nats.permissions --values deploy/k8s/nats-values.yaml``; a test fails
while either differs from what this renders, so nothing new opens by itself.

Why the streams live in accounts of their own: JetStream answers an API request (a
direct get, a pull, a publish acknowledgement) on whatever reply subject the requester
names, with the authority of the account that holds the stream; the requester's own
permissions are never asked. With everything in one account, a service allowed only
``evt.storage.>`` copied any event into ``evt.social.…`` (measured on nats-server 2.15: a
direct get with reply ``evt.social.friendship.p.FriendAdded`` was stored there, its
headers intact), and a gateway could do the same through the rate limits' bucket. Here
every user is in ``APP``, which holds no stream; ``LOG`` (the event log), ``JOURNAL`` (the
command journal), ``LIMITS`` (the gateways' counts) and ``KEYS`` (members' data keys) each
export to ``APP`` only the subjects it needs. An answer delivered into ``APP`` is not
forwarded again by an import, so a chosen reply subject reaches no stream; and a push
consumer can deliver only inside its stream's account, where the stream's own subjects
are refused as a cycle.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from contracts.admin import AdminClient
from contracts.operations import Operation
from contracts.sharing import SharingClient
from contracts.storage import StorageClient
from contracts.subjects import admin_subject, context_subjects, request_subject
from gateway.limits import BUCKET
from runtime.app import Service
from runtime.journal import ROOT as JOURNAL_ROOT
from runtime.personal import BUCKET as KEYS_BUCKET
from runtime.personal import STREAM as KEYS_STREAM
from runtime.settings import Settings
from services.identity.erasure import ErasurePolicy as IdentityErasure
from services.registry import SERVICES
from services.sharing.policy import UnfriendPolicy
from services.sharing.projection import AccessProjection
from services.social.erasure import ErasurePolicy as SocialErasure
from services.social.projection import SocialProjection
from services.storage.erasure import ErasurePolicy as StorageErasure
from services.storage.projection import StorageProjection
from services.sync.erasure import ErasurePolicy as SyncErasure
from services.sync.projection import SyncProjection

EVENTS = Settings().stream
COMMANDS = "COMMANDS"  # runtime.journal.Journal's stream
LIMITS = f"KV_{BUCKET}"  # the gateways' key-value bucket's stream
KEYS = KEYS_STREAM  # the members' data keys' bucket's stream (runtime/personal.py)
APP = "APP"  # every user's account
GATEWAYS = ("desktop", "wechat")  # the member-facing audiences, one user each
OPERATOR = "operator"
# The local stack's superuser (deploy/stack.py), never production's: in LOG, with every
# right, for the tests and for repairs; its password is only in the stack's 0600 files.
ADMIN = "admin"

# The projectors each service runs (built in services/<name>/service.py), by projection
# name; their durable consumers are proj_<schema>_<name>, which the other services are
# denied. A service with a read model that is missing here stops the rendering.
PROJECTORS: dict[str, tuple[str, ...]] = {
    "identity": (IdentityErasure.name,),  # no read model: its schema is its name
    "social": (SocialProjection.name, SocialErasure.name),
    "storage": (StorageProjection.name, StorageErasure.name),
    "sharing": (AccessProjection.name, UnfriendPolicy.name),
    "sync": (SyncProjection.name, SyncErasure.name),
}

# The operations a service calls on another. The declarations say only that services
# may call them (audience "services"), not which; a call missing here is refused. sync
# calls members' operations of storage with the member's own session (a sync upload is
# a backup storage reserves, verifies and charges).
CALLS: dict[str, tuple[Operation[Any, Any], ...]] = {
    "storage": (SharingClient.check,),
    "sync": (StorageClient.begin_upload, StorageClient.complete_upload,
             StorageClient.versions, StorageClient.download),
}


@dataclass(frozen=True)
class Grant:
    """Subjects granted (or denied) together, and why."""

    why: str
    subjects: tuple[str, ...]


@dataclass(frozen=True)
class User:
    """One NATS user in ``APP`` and what it may publish and subscribe to."""

    name: str
    about: str
    publish: list[Grant]
    subscribe: list[Grant]
    deny: list[Grant] = field(default_factory=list)

    @property
    def password(self) -> str:
        """The environment variable the server reads the password from, as referenced."""
        return f"${password_variable(self.name)}"

    def allowed(self) -> list[str]:
        """Every subject the user may publish to (deny aside)."""
        return [s for g in self.publish for s in g.subjects]

    def denied(self) -> list[str]:
        """Every subject the user may not publish to, whatever it is allowed."""
        return [s for g in self.deny for s in g.subjects]

    def listens(self) -> list[str]:
        """Every subject the user may subscribe to."""
        return [s for g in self.subscribe for s in g.subjects]


@dataclass(frozen=True)
class Export:
    """A subject an account exports to ``APP`` (and ``APP`` imports)."""

    account: str
    subject: str
    kind: str = "service"  # or "stream": messages the account publishes, delivered into APP
    streamed: bool = False  # a request answered by several messages (a batch, a pull)


# A streamed answer's route back stays open this long: far longer than a direct-get batch
# or a pull (expires after 1 s, runtime/puller.py) takes; past it the server drops it.
STREAMED_FOR = "10s"


def exports() -> list[Export]:
    """What ``LOG``, ``JOURNAL`` and ``LIMITS`` make reachable from ``APP``: appends, the
    API calls on their own stream that someone in ``APP`` is granted, and (LOG) the
    operator's push deliveries."""
    api = "$JS.API"
    return [
        Export("LOG", "evt.>"),
        Export("LOG", f"{api}.INFO"),
        Export("LOG", f"{api}.STREAM.NAMES"),
        Export("LOG", f"{api}.STREAM.INFO.{EVENTS}"),
        Export("LOG", f"{api}.STREAM.CREATE.{EVENTS}"),
        Export("LOG", f"{api}.DIRECT.GET.{EVENTS}", streamed=True),
        Export("LOG", f"{api}.CONSUMER.CREATE.{EVENTS}"),
        Export("LOG", f"{api}.CONSUMER.CREATE.{EVENTS}.>"),
        Export("LOG", f"{api}.CONSUMER.DURABLE.CREATE.{EVENTS}.*"),
        Export("LOG", f"{api}.CONSUMER.DELETE.{EVENTS}.*"),
        Export("LOG", f"{api}.CONSUMER.INFO.{EVENTS}.*"),
        Export("LOG", f"{api}.CONSUMER.LIST.{EVENTS}"),
        Export("LOG", f"{api}.CONSUMER.NAMES.{EVENTS}"),
        Export("LOG", f"{api}.CONSUMER.MSG.NEXT.{EVENTS}.*", streamed=True),
        Export("LOG", f"$JS.ACK.{EVENTS}.>"),
        Export("LOG", f"$JS.FC.{EVENTS}.>"),
        Export("LOG", f"_INBOX_{OPERATOR}.>", kind="stream"),
        Export("JOURNAL", f"{JOURNAL_ROOT}.>"),
        Export("JOURNAL", f"{api}.STREAM.INFO.{COMMANDS}"),
        Export("JOURNAL", f"{api}.STREAM.CREATE.{COMMANDS}"),
        Export("JOURNAL", f"{api}.DIRECT.GET.{COMMANDS}"),
        Export("LIMITS", f"$KV.{BUCKET}.>"),
        Export("LIMITS", f"{api}.STREAM.INFO.{LIMITS}"),
        Export("LIMITS", f"{api}.STREAM.CREATE.{LIMITS}"),
        Export("LIMITS", f"{api}.DIRECT.GET.{LIMITS}.>"),
        Export("KEYS", f"$KV.{KEYS_BUCKET}.>"),
        Export("KEYS", f"{api}.STREAM.INFO.{KEYS}"),
        Export("KEYS", f"{api}.STREAM.CREATE.{KEYS}"),
        Export("KEYS", f"{api}.DIRECT.GET.{KEYS}.>"),
        Export("KEYS", f"{api}.STREAM.MSG.DELETE.{KEYS}"),
    ]


def password_variable(user: str) -> str:
    """The name of the environment variable holding ``user``'s password for the server."""
    return f"{user.upper()}_PASSWORD"


# ---- subjects from the declarations ---------------------------------------------------

def served(service: Service) -> list[Operation[Any, Any]]:
    """The operations a service serves: its declared ones and, with a read model, the
    operators' replay (`runtime.app.Service.host`)."""
    admin = AdminClient.operations() if service.read_model is not None else []
    return [*service.client.operations(), *admin]


def subject_of(context: str, op: Operation[Any, Any]) -> str:
    """Where ``context`` serves ``op`` (as `runtime.service.ServiceHost.subject`)."""
    return admin_subject(context, op.name) if op.admin else request_subject(context, op.name)


def context_of(op: Operation[Any, Any]) -> str:
    """The service that serves ``op``."""
    for service in SERVICES:
        if any(o is op for o in service.client.operations()):
            return service.name
    raise KeyError(f"no service serves {op!r}")


def calls_for(audience: str) -> list[str]:
    """The request subjects of every operation whose audience includes ``audience``."""
    return [subject_of(s.name, op) for s in SERVICES for op in served(s)
            if audience in op.audience]


def inbox(user: str) -> str:
    """A user's private reply subjects (clients set ``inbox_prefix=_INBOX_<user>``)."""
    return f"_INBOX_{user}.>"


def callers(service: Service) -> list[str]:
    """The users whose requests a service answers: its operations' audiences, and the
    services that call them (`CALLS`), whatever the audience (sync calls storage's
    members' operations)."""
    found: dict[str, None] = {}
    for op in served(service):
        for audience in sorted(op.audience):
            if audience in GATEWAYS:
                found[audience] = None
            elif audience == "operators":
                found[OPERATOR] = None
        found |= dict.fromkeys(c for c, ops in CALLS.items() if any(o is op for o in ops))
    return list(found)


def consumers(service: str) -> list[str]:
    """The durable consumers a service's projectors use (`runtime.projector.Projector`)."""
    schemas = [s.read_model.schema if s.read_model is not None else s.name
               for s in SERVICES if s.name == service]
    if any(s.read_model for s in SERVICES if s.name == service) and service not in PROJECTORS:
        raise KeyError(f"{service} keeps a read model: list its projectors in PROJECTORS")
    return [f"proj_{schema}_{name}" for schema in schemas
            for name in PROJECTORS.get(service, ())]


def _consumer_subjects(consumer: str) -> tuple[str, ...]:
    """What using a consumer takes (as nats-py and runtime/puller.py send it): create it
    (a durable without a ``name``, as the projector makes it), delete it, pull and ack."""
    return (f"$JS.API.CONSUMER.DURABLE.CREATE.{EVENTS}.{consumer}",
            f"$JS.API.CONSUMER.DELETE.{EVENTS}.{consumer}",
            f"$JS.API.CONSUMER.MSG.NEXT.{EVENTS}.{consumer}",
            f"$JS.ACK.{EVENTS}.{consumer}.>")


def discovery(name: str) -> tuple[str, ...]:
    """What nats.micro subscribes to for ``$SRV.PING/INFO/STATS`` discovery of ``name``."""
    return ("$SRV.PING", "$SRV.INFO", "$SRV.STATS", f"$SRV.*.{name}", f"$SRV.*.{name}.*")


# ---- users ------------------------------------------------------------------------------

def service_user(service: Service) -> User:
    """A service: its own events, records, requests and consumers; answers to its callers."""
    name = service.name
    publish = [
        Grant("its own events and command records",
              (context_subjects(name), f"{JOURNAL_ROOT}.{name}.>")),
        Grant("answers to its callers (audiences), discovery answers and replay progress "
              "to the operator, the probe's ping answered on its own inbox",
              tuple(inbox(u) for u in dict.fromkeys([*callers(service), OPERATOR, name]))),
        Grant("its probe (deploy/probe.py)", (f"$SRV.PING.{name}",)),
        Grant("reading the log and the journal: stream checks and direct gets",
              (f"$JS.API.STREAM.INFO.{EVENTS}", f"$JS.API.DIRECT.GET.{EVENTS}",
               f"$JS.API.STREAM.INFO.{COMMANDS}", f"$JS.API.DIRECT.GET.{COMMANDS}")),
        # A key is made by whoever first seals a member's data (a put that fails when the
        # key exists or was destroyed); a subject permission cannot tell a put from a
        # purge, so a service could destroy a key: docs/security.md.
        Grant("members' data keys: read and made (runtime/personal.py)",
              (f"$KV.{KEYS_BUCKET}.>", f"$JS.API.STREAM.INFO.{KEYS}",
               f"$JS.API.DIRECT.GET.{KEYS}.>")),
    ]
    if name == "identity":
        publish.append(Grant("erasing a destroyed data key (only identity erases members)",
                             (f"$JS.API.STREAM.MSG.DELETE.{KEYS}",)))
    if name in CALLS:
        publish.append(Grant("operations it calls on other services",
                             tuple(subject_of(context_of(op), op) for op in CALLS[name])))
    deny: list[Grant] = []
    if service.read_model is not None:
        # A replay's consumer is named rebuild_<schema>_rebuild_<random> (runtime/replay.py),
        # and a subject permission matches whole tokens only: any name, then, except the
        # other services' projectors' consumers.
        publish.append(Grant("its projectors' and replays' consumers",
                             _consumer_subjects("*")))
        others = [c for s in SERVICES if s.name != name for c in consumers(s.name)]
        deny.append(Grant("other services' projectors' consumers",
                          tuple(x for c in others for x in _consumer_subjects(c))))
    elif consumers(name):
        # Projectors without a read model to replay (identity's policies): exactly theirs.
        publish.append(Grant("its projectors' consumers",
                             tuple(x for c in consumers(name) for x in _consumer_subjects(c))))
    subscribe = [Grant("its operations", tuple(subject_of(name, op) for op in served(service))),
                 Grant("discovery", discovery(name)),
                 Grant("its replies and pulled events", (inbox(name),))]
    return User(name, service.description, publish, subscribe, deny)


def gateway_user(audience: str) -> User:
    """A gateway: the operations declared for its audience, and the rate limits' bucket."""
    publish = [
        Grant(f"the operations whose audience includes {audience!r}",
              tuple(calls_for(audience))),
        Grant("the rate limits' counts (gateway/limits.py: used, never created)",
              (f"$KV.{BUCKET}.>", f"$JS.API.STREAM.INFO.{LIMITS}",
               f"$JS.API.DIRECT.GET.{LIMITS}.>")),
        Grant("discovery answers to the operator", (inbox(OPERATOR),)),
    ]
    subscribe = [Grant("its replies", (inbox(audience),)),
                 Grant("discovery, as \"gateway\"", discovery("gateway"))]
    about = {"desktop": "the desktop program's API gateway",
             "wechat": "the WeChat Member Center gateway"}[audience]
    return User(audience, about, publish, subscribe)


def operator_user() -> User:
    """The operator: reads, creates the streams once, replays; never writes to the log."""
    publish = [
        Grant("the operations whose audience includes 'operators' (replay, quotas)",
              tuple(calls_for("operators"))),
        Grant("discovery", ("$SRV.>",)),
        Grant("creating the streams at first start (a create never changes an existing "
              "stream: another configuration is refused)",
              tuple(f"$JS.API.STREAM.CREATE.{s}" for s in (EVENTS, COMMANDS, LIMITS, KEYS))),
        Grant("reading: stream and consumer state, direct gets, the log tailed by an "
              "ordered consumer (ledgershare events tail)",
              ("$JS.API.INFO", "$JS.API.STREAM.NAMES",
               *(f"$JS.API.STREAM.INFO.{s}" for s in (EVENTS, COMMANDS, LIMITS, KEYS)),
               f"$JS.API.DIRECT.GET.{EVENTS}", f"$JS.API.DIRECT.GET.{COMMANDS}",
               f"$JS.API.DIRECT.GET.{LIMITS}.>",
               f"$JS.API.CONSUMER.CREATE.{EVENTS}", f"$JS.API.CONSUMER.CREATE.{EVENTS}.>",
               f"$JS.API.CONSUMER.INFO.{EVENTS}.*", f"$JS.API.CONSUMER.LIST.{EVENTS}",
               f"$JS.API.CONSUMER.NAMES.{EVENTS}", f"$JS.FC.{EVENTS}.>")),
    ]
    subscribe = [Grant("its replies and tailed events", (inbox(OPERATOR),))]
    return User(OPERATOR, "operators: inspect, replay, set quotas", publish, subscribe)


def users() -> list[User]:
    """Every user of production: the services, the gateways, the operator."""
    return [*(service_user(s) for s in SERVICES), *(gateway_user(g) for g in GATEWAYS),
            operator_user()]


# ---- rendering --------------------------------------------------------------------------

HEADER = """\
# ledgershare: NATS accounts and users of production. GENERATED by deploy/nats/permissions.py
# from the declarations (operations' audiences, services, projectors): do not edit; run
#   python -m deploy.nats.permissions > deploy/nats/accounts.conf
# Included by production.conf (and so by cluster.conf) and by the Helm values
# (deploy/k8s/nats-values.yaml). Passwords come from the server's environment.
#
# Every user is in APP, which holds no stream. The event log (LOG), the command journal
# (JOURNAL) and the gateways' rate limits (LIMITS) live in accounts of their own, each
# exporting to APP only what someone there is granted: JetStream answers on whatever
# reply subject a request names, with its stream's account's authority, and an answer
# delivered into APP is not forwarded to another account, so no chosen reply subject
# reaches a stream. Each user may publish and subscribe only to what is listed (no
# allow_responses: answers go only to the callers' private inboxes, _INBOX_<user>).
"""


def _q(subject: str) -> str:
    return json.dumps(subject)


def _grants(grants: Sequence[Grant], indent: str) -> list[str]:
    lines = []
    for grant in grants:
        lines.append(f"{indent}# {grant.why}")
        lines.extend(f"{indent}{_q(s)}" for s in grant.subjects)
    return lines


def _user(user: User) -> list[str]:
    pad = " " * 6
    lines = [f"{pad}# {user.name}: {user.about}",
             f"{pad}{{ user: {user.name}, password: {user.password}",
             f"{pad}  permissions: {{",
             f"{pad}    publish: {{",
             f"{pad}      allow: [", *_grants(user.publish, pad + "        "), f"{pad}      ]"]
    if user.deny:
        lines += [f"{pad}      deny: [", *_grants(user.deny, pad + "        "), f"{pad}      ]"]
    lines += [f"{pad}    }}",
              f"{pad}    subscribe: {{",
              f"{pad}      allow: [", *_grants(user.subscribe, pad + "        "),
              f"{pad}      ]",
              f"{pad}    }}",
              f"{pad}  }}",
              f"{pad}}}"]
    return lines


def _exporting(account: str, found: Iterable[Export], admin: bool = False) -> list[str]:
    lines = [f"  {account}: {{", "    jetstream: enabled", "    exports: ["]
    for e in found:
        extra = f", response_type: stream, response_threshold: {_q(STREAMED_FOR)}" if (
            e.streamed) else ""
        lines.append(f"      {{ {e.kind}: {_q(e.subject)}, accounts: [{APP}]{extra} }}")
    lines.append("    ]")
    if admin:
        lines += ["    # the local stack's superuser: every right on the log (deploy/stack.py)",
                  f"    users: [ {{ user: {ADMIN}, password: ${password_variable(ADMIN)} }} ]"]
    return [*lines, "  }"]


def _importing(found: Iterable[Export]) -> list[str]:
    return [f"      {{ {e.kind}: {{ account: {e.account}, subject: {_q(e.subject)} }} }}"
            for e in found]


def render(*, admin: bool = False) -> str:
    """The text of ``deploy/nats/accounts.conf``; with ``admin``, the local stack's: the
    same accounts and users, and a superuser in ``LOG`` (`ADMIN`)."""
    every = exports()
    lines = [HEADER, "accounts {"]
    for account in dict.fromkeys(e.account for e in every):
        lines += _exporting(account, (e for e in every if e.account == account),
                            admin and account == "LOG")
    lines += [f"  {APP}: {{", "    imports: [", *_importing(every), "    ]", "    users: ["]
    for user in users():
        lines += _user(user)
    lines += ["    ]", "  }", "}", ""]
    return "\n".join(lines)


VALUES_KEY = "      accounts.conf: |"  # the Helm values' last line before the embedded file


def with_accounts(values: str) -> str:
    """Helm values text with the embedded ``accounts.conf`` (everything after
    `VALUES_KEY`, which comes last) replaced by what `render` gives."""
    head, found, _ = values.partition(VALUES_KEY + "\n")
    if not found:
        raise ValueError(f"no {VALUES_KEY.strip()!r} line to put the accounts under")
    body = "".join(f"        {line}" if line.strip() else "\n"
                   for line in render().splitlines(keepends=True))
    return head + found + body


def main(argv: Sequence[str] | None = None) -> None:
    """Print ``accounts.conf``; with ``--values FILE``, rewrite the Helm values' copy."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--values"] and len(args) == 2:
        path = Path(args[1])
        path.write_text(with_accounts(path.read_text()))
        return
    sys.stdout.write(render())


if __name__ == "__main__":
    main()
