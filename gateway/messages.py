"""What a member reads in the Member Center when the system says no: one Chinese sentence
per stable error code (a test holds this table to every code an operation declares)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

MESSAGES: Final[Mapping[str, str]] = {
    "account_taken": "该会员账号已被其他会员使用，请换一个账号。",
    "already_bound": "该会员账号已绑定其他微信，请先在原微信中解除绑定。",
    "already_friends": "你们已经是好友了。",
    "bad_request": "填写的内容不完整或格式不对，请检查后重试。",
    "cannot_friend_self": "不能添加自己为好友。",
    "checksum_mismatch": "上传的文件与声明的校验值不一致，本次上传已取消。",
    "command_in_progress": "同一操作正在处理中，请稍候再试。",
    "command_reused": "该表单已提交过其他内容，请刷新页面后重新填写。",
    "conflict": "有其他人同时修改了同一内容，请刷新后重试。",
    "download_expired": "下载链接已过期，请重新下载。",
    "drive_locked": "云盘密码错误次数过多，云盘已暂时锁定，请稍后再试。",
    "drive_password_already_set": "云盘密码已设置，如需修改请使用修改或找回密码。",
    "drive_password_not_set": "尚未设置云盘密码，请先在 e 会计软件中设置。",
    "forbidden": "您没有权限进行此操作。",
    "internal": "系统出现意外错误，请稍后重试；如仍有问题请联系客服。",
    "invalid_account": "会员账号应为 3–32 位字母、数字或 _ . @ - 。",
    "invalid_credentials": "会员账号或密码不正确。",
    "invalid_nickname": "昵称不能为空，最多 20 个字，且不能含不可见字符。",
    "invalid_token": "登录已过期，请重新进入会员中心。",
    "no_access": "该账套未共享给您，无法访问。",
    "no_backup": "该账套还没有云备份，请先在 e 会计软件中上传云备份。",
    "no_such_member": "找不到该会员：请核对好友的会员账号和昵称，两者都要一致。",
    "no_such_upload": "找不到这次上传，请重新上传。",
    "no_such_version": "找不到该版本。",
    "not_a_friend": "只能共享给好友，请先添加对方为好友。",
    "not_bound": "该微信尚未绑定会员账号。",
    "not_found": "您要找的内容不存在。",
    "not_friends": "你们还不是好友。",
    "not_shared": "该账套没有共享给这位好友。",
    "openid_taken": "该微信已绑定其他会员账号。",
    "quota_exceeded": "网盘空间不足（每位会员 400MB）。",
    "rate_limited": "操作太频繁，请稍后再试。",
    "storage_unavailable": "文件存储暂时无法访问，未做任何更改，请稍后重试。",
    "too_large": "提交的内容太大。",
    "unauthenticated": "请先登录会员中心。",
    "unavailable": "系统暂时繁忙，请稍后重试。",
    "upload_expired": "上传已超时，请重新上传。",
    "upload_incomplete": "上传的文件不完整，本次上传已取消。",
    "weak_password": "密码太短，请至少输入 6 位。",
    "wechat_code_refused": "微信登录已失效，请从公众号菜单重新进入会员中心。",
    "wechat_snapshot_user": "请在微信中点击“使用完整服务”后再进入会员中心。",
    "wechat_unavailable": "微信登录服务暂时无法访问，请稍后再试。",
    "wrong_answer": "密保答案不正确。",
    "wrong_drive_password": "云盘密码不正确。",
    # Agencies (代账公司).
    "administrator_stays": "管理员不能退出或被移除；如不再经营，请关闭代账公司。",
    "agency_set_taken": "该账套已经是公司账套了。",
    "already_in_agency": "该会员已在本公司，或已被邀请、尚未接受。",
    "cannot_invite_self": "不能邀请自己加入本公司。",
    "no_such_agency": "找不到该代账公司：它可能已关闭，或您已不在其中。",
    "no_supervision": "该主管会计并没有督导这位会计。",
    "not_agency_admin": "只有本公司的管理员才能进行此操作。",
    "not_agency_set": "该账套不是本公司的账套。",
    "not_in_agency": "该会员不在本公司（可能已退出或被移除）。",
    "not_invited": "您没有该代账公司的邀请，或邀请已被撤回。",
    "supervision_exists": "该主管会计已经在督导这位会计了。",
    "wrong_role": ("该成员的角色不能这样操作：只有会计经手账套，只有主管会计督导会计，"
                   "管理员的角色不能修改。"),
    # The pages' own refusals.
    "csrf": "页面已过期，请刷新后重新提交。",
    "login_state": "登录已失效，请从公众号菜单重新进入会员中心。",
    "device_revoked": "这台电脑已被移出您的设备，请重新登记后再同步。",
    "lease_held": "该账套年度正在另一台电脑上使用，您可以只读打开，或等对方同步后再试。",
    "lease_not_held": "这台电脑已不再占用该账套年度（已过期或被解除），请重新占用后再同步。",
    "no_lease": "该账套年度当前没有电脑在使用，无需解除占用。",
    "no_such_device": "没有找到您的这台设备。",
    "sync_off": "该账套年度尚未开启云同步，请先开启。",
}
FALLBACK: Final = MESSAGES["internal"]


def message(code: str) -> str:
    """The Chinese sentence for ``code`` (a generic apology for a code not in the table)."""
    return MESSAGES.get(code, FALLBACK)
