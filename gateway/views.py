"""What the Member Center pages show, computed from the services' replies: pure functions
the templates read (no I/O, so each is tested on its own)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone

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
