"""What the Member Center pages show, computed from the services' replies: pure functions
the templates read (no I/O, so each is tested on its own)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone

from contracts.agency import AgencyView, Role
from contracts.sharing import SharedSet, SharedWith
from contracts.social import Friend
from contracts.storage import DriveListing, SetYear

# China Standard Time has no daylight saving: a fixed offset is exact.
CHINA = timezone(timedelta(hours=8), "CST")
MB = 1024 * 1024
PERMISSIONS = {"read-write": "可读写", "read-only": "只读"}


def cn_date(moment: datetime) -> str:
    """``2026年11月30日``, on the calendar of China."""
    day = moment.astimezone(CHINA)
    return f"{day.year}年{day.month}月{day.day}日"


def cn_time(moment: datetime) -> str:
    """``2026年11月30日 09:12``, China time."""
    return f"{cn_date(moment)} {moment.astimezone(CHINA):%H:%M}"


def megabytes(size: int) -> str:
    """``70.74MB``, as the desktop program's upload dialog writes sizes."""
    return f"{size / MB:.2f}MB"


def expiry(day: date) -> datetime:
    """A share that ends with ``day`` (China time) ends at the next midnight there."""
    return datetime.combine(day + timedelta(days=1), time(), CHINA).astimezone(UTC)


@dataclass(frozen=True)
class YearRow:
    """One fiscal year of an account set in the drive list."""

    year: int
    period: int
    versions: int
    remark: str
    uploader: str
    uploaded_at: datetime
    size: int


@dataclass(frozen=True)
class SetRows:
    """One account set in the drive list, its years newest first."""

    set_id: str
    set_name: str
    years: list[YearRow]


def drive_sets(listing: DriveListing, me: str, friends: Sequence[Friend]) -> list[SetRows]:
    """The drive's set-years grouped by account set, each year with who uploaded its
    latest version ("我" for the member, a friend's nickname, else the uploader's id)."""
    names = {f.member_id: f.nickname for f in friends} | {me: "我"}
    grouped: dict[str, SetRows] = {}
    for item in sorted(listing.set_years, key=lambda s: (s.set_name, s.set_id, -s.year)):
        rows = grouped.setdefault(item.set_id, SetRows(item.set_id, item.set_name, []))
        rows.years.append(_year_row(item, names))
    return list(grouped.values())


def _year_row(item: SetYear, names: dict[str, str]) -> YearRow:
    latest = item.latest
    return YearRow(year=item.year, period=latest.period, versions=item.versions,
                   remark=latest.remark,
                   uploader=names.get(latest.uploader_id, latest.uploader_id),
                   uploaded_at=latest.uploaded_at, size=item.size)


def set_years(listing: DriveListing, set_id: str) -> tuple[str, list[int]]:
    """The name and the fiscal years of one account set in the drive ("" and [] when the
    drive has no backup of it)."""
    years = sorted(s.year for s in listing.set_years if s.set_id == set_id)
    name = next((s.set_name for s in listing.set_years if s.set_id == set_id), "")
    return name, years


def share_summary(sets: Iterable[SharedSet]) -> str:
    """``您共享了 N 个账套给 M 位好友`` as the guide words the share list."""
    shared = [s for s in sets if s.friends]
    friends = {f.account for s in shared for f in s.friends}
    return f"您共享了 {len(shared)} 个账套给 {len(friends)} 位好友"


def share_line(share: SharedWith) -> str:
    """``于2026年11月30日开始共享给 李四（可读写，全部年度）``, the guide's sentence."""
    years = "全部年度" if not share.years else "、".join(f"{y}年度" for y in share.years)
    terms = [PERMISSIONS.get(share.permission, share.permission), years]
    if share.expires_at is not None:
        terms.append(f"{cn_date(share.expires_at - timedelta(seconds=1))}到期")
    return f"于{cn_date(share.since)}开始共享给 {share.nickname}（{'，'.join(terms)}）"


# ---- agencies (代账公司) -------------------------------------------------------------------

ROLES: dict[str, str] = {"administrator": "管理员", "supervisor": "主管会计",
                         "accountant": "会计"}
_RANK: dict[str, int] = {"administrator": 0, "supervisor": 1, "accountant": 2}


def role_name(role: str) -> str:
    """``管理员`` / ``主管会计`` / ``会计``."""
    return ROLES.get(role, role)


@dataclass(frozen=True)
class MemberRow:
    """One line of an agency's members table."""

    account: str
    nickname: str
    role: Role
    since: datetime
    invited: bool
    supervises: list[str]  # the nickname (else the account) of each accountant overseen
    supervised_by: list[str]  # the nickname (else the account) of each supervisor


@dataclass(frozen=True)
class SupervisionRow:
    """One supervisor overseeing one accountant."""

    supervisor: str
    supervisor_name: str
    accountant: str
    accountant_name: str


@dataclass(frozen=True)
class SetRow:
    """One agency set: whose drive holds it, and who works on it (each an account, with
    its nickname while its member is in the agency, else "")."""

    owner: str
    owner_nickname: str
    set_id: str
    keeper: str  # "" for nobody
    keeper_nickname: str


@dataclass(frozen=True)
class AgencyPage:
    """What an agency page shows, shaped for its reader (``me``, an account)."""

    members: list[MemberRow]
    supervision: list[SupervisionRow]
    sets: list[SetRow]
    my_role: Role | None
    staff: list[MemberRow]  # joined supervisors and accountants (whose role can change)
    supervisors: list[MemberRow]
    accountants: list[MemberRow]

    @property
    def admin(self) -> bool:
        return self.my_role == "administrator"


def agency_page(view: AgencyView, me: str) -> AgencyPage:
    """The members (administrator first, then supervisors, accountants, and invitations
    last), the supervision pairs, and the sets, each account with its nickname."""
    names = {m.account: m.nickname for m in view.members}
    overseen = {m.account: sorted(m.supervises) for m in view.members if not m.invited}
    overseers = {a: sorted(s for s, accs in overseen.items() if a in accs)
                 for accs in overseen.values() for a in accs}
    members = [MemberRow(account=m.account, nickname=m.nickname, role=m.role, since=m.since,
                         invited=m.invited,
                         supervises=[names.get(a, a) for a in sorted(m.supervises)],
                         supervised_by=[names.get(s, s) for s in overseers.get(m.account, [])])
               for m in sorted(view.members, key=lambda m: (m.invited, _RANK.get(m.role, 9),
                                                            m.since, m.account))]
    pairs = [SupervisionRow(m.account, m.nickname, a, names.get(a, a))
             for m in members for a in overseen.get(m.account, [])]
    sets = [SetRow(owner=s.owner, owner_nickname=names.get(s.owner, ""), set_id=s.set_id,
                   keeper=s.keeper, keeper_nickname=names.get(s.keeper, "") if s.keeper else "")
            for s in sorted(view.sets, key=lambda s: (s.owner, s.set_id))]
    mine = next((m.role for m in members if m.account == me and not m.invited), None)
    joined = [m for m in members if not m.invited]
    return AgencyPage(
        members=members, supervision=pairs, sets=sets, my_role=mine,
        staff=[m for m in joined if m.role != "administrator"],
        supervisors=[m for m in joined if m.role == "supervisor"],
        accountants=[m for m in joined if m.role == "accountant"])
