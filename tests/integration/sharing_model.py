"""The plain-Python model the stateful test (test_model.py) holds the system to.

Written from the guide and the README, never from the system's answers: who may see and
write which account-set year, what each command must be refused with, which bytes each
verified version holds, what a drive may use, and how many events of each kind the
acknowledged commands must have appended. Members are indexes 0..n-1.

Access comes from a friend's share or through a bookkeeping agency (`Agency`; what each
agency command must come to is `agency_model.py`): the administrator over every set marked
as the agency's work, a supervisor over the sets the accountants they oversee keep, a keeper
a set was handed to as its owner did; the owner of a set handed to someone else is refused
it, and their shares of it count no more. Supervisors and the administrator read only
unless the agency lets them write; a leave, a removal or a closing ends what it gave at
once. Written from the agency contract's words (contracts/agency.py), not from its fold
(contracts/agency_state.py): the point is a second, independent reading.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from contracts.errors import BadRequest, LedgerError
from contracts.sharing import NoBackup, NotAFriend, Permission
from contracts.storage import NoAccess, NoSuchVersion, QuotaExceeded

SETS = ("alpha", "beta")
YEARS = (2018, 2019)
QUOTA = 40_000  # bytes per drive: a handful of uploads of up to 12 kB fill it
# A grant's expiry this close to the moment of a call may fall on either side of it.
EXPIRY_MARGIN = timedelta(seconds=1.5)

Triple = tuple[int, str, int]  # a grant: (owner, set, friend)
Refusals = tuple[type[LedgerError], ...]
StaffRole = Literal["supervisor", "accountant"]
Level = Literal["read", "write", "refused"]  # what an agency gives: "refused" the owner
Work = tuple[int, int, str]  # (member, owner, set) as agencies let the member use it


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Terms:
    """A grant's terms as the owner set them."""

    permission: Permission
    years: tuple[int, ...] | None
    expires_at: datetime | None


@dataclass(frozen=True)
class Stored:
    """A verified version: where it is and the exact bytes it holds."""

    version_id: str
    owner: int
    set_id: str
    year: int
    data: bytes

    @property
    def sha256(self) -> str:
        return sha(self.data)


@dataclass(frozen=True)
class Expected:
    """What a command must come to: refused with one of ``refuse`` (when any), else
    accepted; it may also be refused with one of ``maybe`` (the model cannot say)."""

    refuse: Refusals = ()
    maybe: Refusals = ()


@dataclass
class Agency:
    """One bookkeeping agency: its administrator, staff and invitations, who oversees whom,
    and which sets are its work, each with the member who keeps it (None: its keeper left
    and nobody keeps it until it is handed over again)."""

    admin: int
    open: bool = True
    supervisors_write: bool = False
    staff: dict[int, StaffRole] = field(default_factory=dict)  # joined, not the admin
    invited: dict[int, StaffRole] = field(default_factory=dict)
    oversees: set[tuple[int, int]] = field(default_factory=set)  # (supervisor, accountant)
    work: dict[tuple[int, str], int | None] = field(default_factory=dict)  # (owner, set)

    def is_member(self, who: int) -> bool:
        return self.open and (who == self.admin or who in self.staff)

    def role(self, who: int) -> str | None:
        """administrator, supervisor or accountant; None for anyone not in it."""
        if not self.is_member(who):
            return None
        return "administrator" if who == self.admin else self.staff[who]

    def depart(self, who: int) -> None:
        """A member leaves or is removed: everything they had here ends at once. Sets they
        own and keep are theirs alone again; a set they keep for someone else waits for
        a keeper (its owner does not get it back by their leaving)."""
        self.staff.pop(who, None)
        self.invited.pop(who, None)
        self.oversees = {p for p in self.oversees if who not in p}
        for (owner, set_id), keeper in list(self.work.items()):
            if keeper == who:
                if owner == who:
                    del self.work[(owner, set_id)]
                else:
                    self.work[(owner, set_id)] = None

    def change_role(self, who: int, role: StaffRole) -> None:
        """Only a supervisor oversees, only an accountant is overseen."""
        self.staff[who] = role
        self.oversees = {(s, a) for s, a in self.oversees
                         if (s != who or role == "supervisor")
                         and (a != who or role == "accountant")}

    def gives(self, member: int, owner: int, set_id: str) -> Level | None:
        """What this agency lets ``member`` do with (owner, set); None: it says nothing."""
        if not self.open or (owner, set_id) not in self.work:
            return None
        keeper = self.work[(owner, set_id)]
        if member == owner:
            return None if keeper == owner else "refused"
        if keeper == member:
            return "write"  # handed over to them: they work on it as its owner did
        oversight: Level = "write" if self.supervisors_write else "read"
        if member == self.admin:
            return oversight
        if keeper is not None and (member, keeper) in self.oversees:
            return oversight
        return None


@dataclass
class Model:
    """What the system must have done so far."""

    size: int
    friends: set[frozenset[int]] = field(default_factory=set)
    grants: dict[Triple, Terms] = field(default_factory=dict)
    versions: dict[str, Stored] = field(default_factory=dict)
    latest: dict[tuple[int, str, int], str] = field(default_factory=dict)
    # Bytes a drive must at least / may at most use: the same content twice may be
    # charged once (dedup) or twice, depending on who uploaded it.
    used_lo: list[int] = field(default_factory=list)
    used_hi: list[int] = field(default_factory=list)
    events: Counter[str] = field(default_factory=Counter)
    agencies: list[Agency] = field(default_factory=list)  # in the order they were created

    def __post_init__(self) -> None:
        self.used_lo = [0] * self.size
        self.used_hi = [0] * self.size

    # ---- facts --------------------------------------------------------------------------

    def are_friends(self, a: int, b: int) -> bool:
        return frozenset((a, b)) in self.friends

    def between(self, a: int, b: int) -> list[Triple]:
        """Every grant the two hold from each other."""
        return [t for t in self.grants if {t[0], t[2]} == {a, b}]

    def revoked_by(self, owner: int, set_id: str, friend: int | None) -> list[Triple]:
        """The grants an owner's revoke of one friend (None: everyone) ends."""
        return [t for t in self.grants if t[:2] == (owner, set_id) and friend in (None, t[2])]

    def has_backup(self, owner: int, set_id: str) -> bool:
        return any(v.owner == owner and v.set_id == set_id for v in self.versions.values())

    def add_version(self, stored: Stored, *, copy: bool) -> None:
        self.versions[stored.version_id] = stored
        self.latest[(stored.owner, stored.set_id, stored.year)] = stored.version_id
        self.used_hi[stored.owner] += len(stored.data)
        if not copy:
            self.used_lo[stored.owner] += len(stored.data)

    # ---- access -------------------------------------------------------------------------

    def through_agencies(self, member: int, owner: int, set_id: str) -> Level | None:
        """What the agencies together let ``member`` do with (owner, set): "refused" for an
        owner whose set any of them handed to someone else; else the most any gives."""
        given = {a.gives(member, owner, set_id) for a in self.agencies}
        levels: tuple[Level, ...] = ("refused", "write", "read")
        return next((level for level in levels if level in given), None)

    def agency_work(self) -> dict[Work, Level]:
        """Every (member, owner, set) some agency says something about."""
        found: dict[Work, Level] = {}
        for member in range(self.size):
            for owner in range(self.size):
                for set_id in SETS:
                    level = self.through_agencies(member, owner, set_id)
                    if level is not None:
                        found[(member, owner, set_id)] = level
        return found

    def allows(self, member: int, owner: int, set_id: str, year: int, access: str,
               now: datetime) -> bool | None:
        """Whether ``member`` may read or write (owner, set, year) at ``now``. The owner
        may, unless an agency handed the set to someone else. Anyone else: through an
        agency (any year), or by an active grant between active friends, within
        permission, years and expiry, while the owner holds the set (the owner's shares
        go with it when an agency hands it over). None when the grant's expiry is too
        close to ``now`` to say."""
        agency = self.through_agencies(member, owner, set_id)
        handed_over = self.through_agencies(owner, owner, set_id) == "refused"
        if member == owner:
            return not handed_over
        if agency == "write" or (agency == "read" and access == "read"):
            return True
        return False if handed_over else self._shared(member, owner, set_id, year, access,
                                                      now)

    def _shared(self, member: int, owner: int, set_id: str, year: int, access: str,
                now: datetime) -> bool | None:
        terms = self.grants.get((owner, set_id, member))
        if terms is None or not self.are_friends(member, owner):
            return False
        if terms.years is not None and year not in terms.years:
            return False
        if access == "write" and terms.permission != "read-write":
            return False
        if terms.expires_at is not None:
            if abs(terms.expires_at - now) < EXPIRY_MARGIN:
                return None
            return now < terms.expires_at
        return True

    def allows_during(self, member: int, owner: int, set_id: str, year: int, access: str,
                      start: datetime, seconds: float) -> bool | None:
        """`allows` from ``start`` for ``seconds``; None unless one answer holds throughout."""
        first = self.allows(member, owner, set_id, year, access, start)
        last = self.allows(member, owner, set_id, year, access,
                           start + timedelta(seconds=seconds))
        return first if first == last else None

    # ---- what a command must come to ----------------------------------------------------

    def grant(self, owner: int, set_id: str, friends: list[int],
              expires_at: datetime | None, now: datetime) -> Expected:
        """A grant needs a backup of the set, friends only, and an expiry still ahead
        (an expiry without a time zone is no moment at all)."""
        refuse: list[type[LedgerError]] = []
        if not self.has_backup(owner, set_id):
            refuse.append(NoBackup)
        if any(f == owner or not self.are_friends(owner, f) for f in friends):
            refuse.append(NotAFriend)
        if expires_at is not None and (expires_at.tzinfo is None or expires_at <= now):
            refuse.append(BadRequest)
        return Expected(tuple(refuse))

    def download(self, member: int, owner: int, set_id: str, year: int,
                 now: datetime) -> Expected:
        """Read access first (the same refusal whether the set exists or not), then a
        version of that year."""
        access = self.allows_during(member, owner, set_id, year, "read", now, 1.0)
        missing: Refusals = () if (owner, set_id, year) in self.latest else (NoSuchVersion,)
        if access is None:
            return Expected(maybe=(NoAccess, *missing))
        return Expected(missing) if access else Expected((NoAccess,))

    def upload(self, uploader: int, owner: int, set_id: str, year: int, size: int,
               used: int, *, copy: bool, now: datetime) -> Expected | None:
        """Write access, then room in the owner's drive (``used`` bytes now). Content the
        drive holds already may be charged nothing. None when a grant expires during the
        upload (both answers are right)."""
        access = self.allows_during(uploader, owner, set_id, year, "write", now, 3.0)
        if access is None:
            return None
        if not access:
            return Expected((NoAccess,))
        if used + size <= QUOTA:
            return Expected()
        return Expected(maybe=(QuotaExceeded,)) if copy else Expected((QuotaExceeded,))
