"""What the staff screen says, in the centre's language. Staff-facing sentences stay here rather than in
edge.meals.feedback, which holds what the kiosk says to seniors."""

from __future__ import annotations

from edge.meals.feedback import Language

_T: dict[str, dict[Language, str]] = {
    "title": {"zh": "请确认签到", "en": "Please confirm check-in"},
    "open_checkin": {"zh": "手工签到", "en": "Check in by hand"},
    "open_today": {"zh": "今日用餐", "en": "Today"},
    "open_enrol": {"zh": "录入", "en": "Enrol"},
    "intro": {
        "zh": "摄像头不能完全确定以下人员。请看清楚是否为本人，再按按钮。",
        "en": "The camera was not sure about these people. Check who it is, then press a button.",
    },
    "empty": {"zh": "目前没有需要确认的签到。", "en": "Nothing to confirm right now."},
    "yes": {"zh": "确认：是 {name} 本人", "en": "Confirm: this is {name}"},
    "no": {"zh": "不是本人", "en": "Not this person"},
    "check": {
        "zh": "摄像头无法确认这是真人，可能是举在镜头前的照片或手机画面。"
        "请工作人员当面核实，并再次输入自己的密码后再确认。",
        "en": "The camera could not tell a real face from a photo or a phone screen held up to it. A staff "
        "member must look at the person and enter their own PIN again before confirming.",
    },
    "staff_required": {"zh": "您的密码（必填）", "en": "Your PIN (required)"},
    "needs_name": {
        "zh": "这一条需要工作人员核实：请输入您的密码。",
        "en": "A staff member must check this one: enter your PIN.",
    },
    "wrong_pin": {
        "zh": "密码不对，没有做任何操作。",
        "en": "Wrong PIN: nothing was done.",
    },
    "login_title": {"zh": "工作人员登录", "en": "Staff login"},
    "login_intro": {
        "zh": "确认签到前，请用您自己的工号和密码登录。",
        "en": "Log in with your own staff id and PIN before confirming check-ins.",
    },
    "login_id": {"zh": "工号", "en": "Staff id"},
    "login_pin": {"zh": "密码", "en": "PIN"},
    "login_go": {"zh": "登录", "en": "Log in"},
    "login_bad": {"zh": "工号或密码不对。", "en": "Wrong staff id or PIN."},
    "login_locked": {
        "zh": "密码错误次数太多，此账号已暂时锁定。请稍后再试，或联系负责人。",
        "en": "Too many wrong PINs: this account is locked for a while. Try later or ask the manager.",
    },
    "login_expired": {
        "zh": "您已退出或登录已过期：没有做任何操作。请重新登录。",
        "en": "You were logged out (or the login expired): nothing was done. Please log in again.",
    },
    "who": {"zh": "当前登录：{name}（{id}）", "en": "Logged in: {name} ({id})"},
    "logout": {"zh": "退出", "en": "Log out"},
    "id": {"zh": "编号", "en": "ID"},
    "seen": {"zh": "{time} 签到", "en": "Seen at {time}"},
    "gone": {"zh": "（已不在名册中）", "en": "(no longer enrolled)"},
    "older": {
        "zh": "另有 {n} 条往日的待确认记录，已不能补贴，请负责人清除。",
        "en": "{n} older request(s) from earlier days can no longer be paid; the manager can clear them.",
    },
    "back": {"zh": "返回列表", "en": "Back to the list"},
    "no_meal": {"zh": "没有为 {name} 记录用餐：{why}", "en": "No meal recorded for {name}: {why}"},
    "rejected": {"zh": "已取消：没有为 {name} 签到。", "en": "Cancelled: {name} was not checked in."},
    "already_confirmed": {
        "zh": "这一条已由 {by} 在 {time} 确认过，没有重复记录。",
        "en": "This was already confirmed by {by} at {time}. Nothing changed.",
    },
    "already_rejected": {
        "zh": "这一条已由 {by} 在 {time} 取消，没有任何更改。",
        "en": "This was already cancelled by {by} at {time}. Nothing changed.",
    },
    "not_today": {
        "zh": "这是往日的记录，现在不能补贴。请按“不是本人”清除它。",
        "en": "This request is from an earlier day and cannot be paid now. "
        "Press \u201cNot this person\u201d to clear it.",
    },
    "not_enrolled": {
        "zh": "{senior_id} 已不在名册中，不能记录用餐。请按“不是本人”清除它。",
        "en": "{senior_id} is no longer enrolled, so no meal can be recorded. "
        "Press \u201cNot this person\u201d to clear it.",
    },
    "e503_title": {"zh": "暂时无法读取签到记录", "en": "The check-in records cannot be reached"},
    "e503_do": {
        "zh": "没有付款，也没有任何更改。请确认 meal-edge 服务正在运行、磁盘没有满，然后按“刷新”。"
        "如果仍然出错，请联系技术人员，并告诉他们上面的说明。",
        "en": "Nothing was paid or changed. Check that the meal-edge service is running and the disk is not full, "
        "then press Reload. If it keeps happening, call the technician and show them the message above.",
    },
    "e404": {"zh": "找不到这条确认记录。", "en": "This request does not exist on this kiosk."},
    "e403": {
        "zh": "页面已过期，没有做任何操作。请返回列表再按一次。",
        "en": "This page was out of date, so nothing was done. Go back to the list and press again.",
    },
    "e400": {"zh": "请求不完整，没有做任何操作。", "en": "Incomplete request: nothing was done."},
    "e401": {"zh": "请先登录。", "en": "Log in first."},
    "e_host": {
        "zh": "请在本机用 http://127.0.0.1 打开本页面。",
        "en": "Open this page on this machine, as http://127.0.0.1.",
    },
    "e500": {
        "zh": "出现意外错误，请联系技术人员。",
        "en": "Something unexpected went wrong. Please call the technician.",
    },
    "reload": {"zh": "刷新", "en": "Reload"},
    "snapshot_alt": {"zh": "摄像头在 {time} 拍到的人", "en": "Who the camera saw at {time}"},
    "no_snapshot": {"zh": "没有照片", "en": "No snapshot"},
}


#: why the kiosk asked, in plain words for staff (codes from edge.recognition.decide and edge.recognition.liveness)
_WHY: dict[str, dict[Language, str]] = {
    "not_close_enough": {"zh": "面部相似度不够高", "en": "The face is only a fair match"},
    "ambiguous_margin": {"zh": "与另一位登记老人长得很像", "en": "Looks much like another enrolled senior"},
    "frames_disagree": {"zh": "几张画面的识别结果不一致", "en": "The camera's pictures did not agree"},
    "lookalike_margin": {
        "zh": "有登记的相貌相似者（如兄弟姐妹）",
        "en": "Has an enrolled lookalike (such as a sibling)",
    },
    "liveness_not_confirmed": {
        "zh": "未能确认是真人：请核实不是照片或手机画面",
        "en": "Could not confirm a real face: check it is the person, not a photo or a phone",
    },
    "planar_motion": {"zh": "面部看起来像平面照片", "en": "The face looked flat, like a photo"},
    "surroundings_move_with_face": {"zh": "背景随面部一起移动", "en": "The background moved with the face"},
    "too_still": {"zh": "人站得太静，无法判断", "en": "The person stood very still"},
    "too_few_frames": {"zh": "只看到很短时间", "en": "Seen only briefly"},
}


def phrase(key: str, lang: Language, **kw: object) -> str:
    text = _T[key][lang]
    return text.format(**kw) if kw else text


def why_text(reasons: tuple[str, ...], lang: Language) -> list[str]:
    """Each reason in plain words; an unknown code is shown as is rather than hidden."""
    return [_WHY[r][lang] if r in _WHY else r for r in reasons]
