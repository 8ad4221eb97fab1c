"""The staff screen's enrolment page 录入 (`/enrol`): routes and HTML around enroll/enrol_desk.py.

Served by edge/screens/staffserver.py as one of its extra pages (`StaffScreenServer.pages`, wired by
`meal-edge staff-screen` in edge/cli/staff_screen.py), so it sits behind the same Host check, login and form
token as the confirmation buttons; nothing is shown before a login, and who enrols is the logged-in staff id.

    GET  /enrol                 find a senior on the roster (?q=), or type a new one
    POST /enrol/start           choose (senior=ID) or type in (id, name, birth, hukou, card) -> /enrol/d/KEY
    GET  /enrol/d/KEY           the senior, the kiosk camera's preview, 拍照 and the upload form
    GET  /enrol/preview.jpg     the camera's latest picture (renews the daemon's sharing for 20 s)
    POST /enrol/capture         3 frames from the camera, enrolled          -> /enrol/r/KEY
    POST /enrol/upload          multipart photos (each at most 8 MB), enrolled -> /enrol/r/KEY
    GET  /enrol/r/KEY           each photo's outcome in words, and the result
"""

from __future__ import annotations

import email.parser
import email.policy
import html
import logging
import re
from http import HTTPStatus
from typing import Any, Protocol
from urllib.parse import SplitResult, parse_qs

from markupsafe import Markup

from edge.meals.feedback import Language
from edge.screens import localweb, staffpages
from edge.screens.checkin_page import MAX_FOUND
from edge.screens.staffscreen import StaffScreen
from edge.security.staffauth import Session
from enroll.enrol_desk import MAX_PHOTO_BYTES, MAX_UPLOADS, PHOTOS, EnrolDesk, Outcome

log = logging.getLogger(__name__)

PREFIX = "/enrol"
#: the whole upload: the photos and a little form around them; a bigger body is not read at all
MAX_UPLOAD_BODY = MAX_UPLOADS * MAX_PHOTO_BYTES + 64 * 1024
_KEY = r"([A-Za-z0-9_-]{8,20})"
_DRAFT = re.compile(PREFIX + "/d/" + _KEY)
_RESULT = re.compile(PREFIX + "/r/" + _KEY)

CSS = localweb.static_text("enrol.css")
JS = localweb.static_text("enrol.js")
#: the staff pages' policy, plus this page's own style and script (by hash)
CSP = staffpages.CSP.replace("style-src ", f"style-src {localweb.csp_hash(CSS)} ").replace(
    "script-src ", f"script-src {localweb.csp_hash(JS)} "
)

_W: dict[str, dict[Language, str]] = {
    "title": {"zh": "录入", "en": "Enrol"},
    "find_h": {"zh": "已在名册中的老人", "en": "A senior on the roster"},
    "find": {"zh": "姓名、拼音或编号", "en": "Name, pinyin initials, id or card"},
    "search": {"zh": "查找", "en": "Find"},
    "none": {"zh": "没有找到“{q}”。", "en": "Nobody matches \u201c{q}\u201d."},
    "pick": {"zh": "为 {name} 录入", "en": "Enrol {name}"},
    "new_h": {"zh": "新老人", "en": "A new senior"},
    "f_id": {"zh": "编号", "en": "Id"},
    "f_name": {"zh": "姓名", "en": "Name"},
    "f_birth": {"zh": "出生日期", "en": "Birth date"},
    "f_birth_eg": {"zh": "例如 1948-03-15", "en": "e.g. 1948-03-15"},
    "f_hukou": {"zh": "户籍（区）", "en": "Hukou district"},
    "f_card": {"zh": "餐卡号（可不填）", "en": "Meal card (optional)"},
    "next": {"zh": "下一步：拍照", "en": "Next: photos"},
    "who": {"zh": "{name}（编号 {id}，{born} 出生）", "en": "{name} (id {id}, born {born})"},
    "known": {"zh": "已在名册中：新照片会加到这位老人名下。", "en": "On the roster: new photos are added."},
    "fresh": {"zh": "新老人：照片合格后才会登记。", "en": "New senior: enrolled once the photos pass."},
    "cam_h": {"zh": "用签到机的摄像头拍照", "en": "Photos from the kiosk camera"},
    "cam_do": {
        "zh": "请老人站在签到机前，正对摄像头。按“拍照”后请老人轻轻转一下头，约需 5 到 20 秒。",
        "en": "The senior stands at the kiosk facing the camera. After pressing, they move the head a little; "
        "5 to 20 s.",
    },
    "cam_go": {"zh": "拍照（{n} 张）", "en": "Take {n} pictures"},
    "cam_wait": {
        "zh": "正在等待摄像头画面…（一直没有画面：请确认签到程序正在运行）",
        "en": "Waiting for the camera\u2026 (none for long: is meal-edge running?)",
    },
    "cam_busy": {"zh": "正在拍照，请老人看着摄像头…", "en": "Taking pictures: look at the camera\u2026"},
    "cam_alt": {"zh": "签到机摄像头现在的画面", "en": "What the kiosk camera sees now"},
    "up_h": {"zh": "或上传照片", "en": "Or upload photos"},
    "up_do": {
        "zh": "1 到 5 张清楚的正面照，每张不超过 8 MB。",
        "en": "1 to 5 clear photos of the face, at most 8 MB each.",
    },
    "up_go": {"zh": "上传并录入", "en": "Upload and enrol"},
    "res_ok": {
        "zh": "已录入：{name}，新增 {n} 张照片（共 {total} 张）",
        "en": "Enrolled: {name}, {n} photo(s) added ({total} in all)",
    },
    "res_no": {"zh": "没有录入：{name}", "en": "Not enrolled: {name}"},
    "res_kiosk": {
        "zh": "几秒钟后签到机就能认出这位老人，不需要重启。",
        "en": "The kiosk recognises this senior within seconds, no restart needed.",
    },
    "ok": {"zh": "合格", "en": "Accepted"},
    "again": {"zh": "再拍一次 / 再传", "en": "Take or upload more"},
    "next_senior": {"zh": "录入下一位", "en": "Enrol the next senior"},
    "back": {"zh": "返回确认列表", "en": "Back to confirmations"},
    "gone": {"zh": "这一页已过期，请重新选择老人。", "en": "This page expired: choose the senior again."},
    "too_big": {
        "zh": "上传的文件太大（最多 5 张，每张 8 MB）：没有做任何操作。",
        "en": "Upload too large (at most 5 photos of 8 MB): nothing was done.",
    },
    "bad_upload": {"zh": "上传不完整，请再试一次。", "en": "The upload was incomplete: try again."},
}


def word(key: str, lang: Language, **kw: object) -> str:
    text = _W[key][lang]
    return text.format(**kw) if kw else text


class Handler(Protocol):
    """What this page uses of the staff screen's request handler (edge/screens/staffserver.py)."""

    headers: Any
    rfile: Any
    command: str
    close_connection: bool

    @property
    def screen(self) -> StaffScreen: ...

    def _session(self, *, touch: bool) -> Session | None: ...

    def _form(self) -> dict[str, list[str]] | None: ...

    def _login_page(self, status: HTTPStatus, message: str | None = None, staff_id: str = "") -> None: ...

    def _error(self, status: HTTPStatus, key: str, detail: str | None = None, *, as_json: bool = False) -> None: ...


class EnrolPage:
    """One of the staff screen's extra pages: `handle` answers every request under PREFIX."""

    prefix = PREFIX

    def __init__(self, desk: EnrolDesk) -> None:
        self.desk = desk
        self.lang = desk.lang

    def close(self) -> None:
        self.desk.close()

    def handle(self, h: Handler, method: str, url: SplitResult) -> None:
        path = url.path
        session = h._session(touch=method == "POST")
        if session is None:  # nothing, not even the camera's picture, before a login
            h._login_page(HTTPStatus.UNAUTHORIZED)
            return
        if method == "GET":
            q = parse_qs(url.query)
            d, r = _DRAFT.fullmatch(path), _RESULT.fullmatch(path)
            if path == PREFIX:
                self.desk.stop_preview()  # no senior chosen: the camera is not shared
                self._page(h, self._find(h.screen, q.get("q", [""])[0]))
            elif path == PREFIX + "/preview.jpg":
                self._preview(h)
            elif d is not None:
                self._page(h, self._chosen(h.screen, d.group(1)))
            elif r is not None:
                self.desk.stop_preview()  # the capture is over: no picture stays behind
                self._page(h, self._result(r.group(1)))
            else:
                h._error(HTTPStatus.NOT_FOUND, "e404")
            return
        if path == PREFIX + "/upload":
            self._upload(h, session)
            return
        form = h._form()
        if form is None:
            return
        f = {k: v[0] for k, v in form.items()}
        if path == PREFIX + "/start":
            self._start(h, f)
        elif path == PREFIX + "/capture":
            self._redirect_to(h, self.desk.capture(f.get("d", ""), session))
        else:
            h._error(HTTPStatus.NOT_FOUND, "e404")

    # -- answers --------------------------------------------------------------------------------------

    def _send(
        self, h: Handler, status: HTTPStatus, body: str | bytes, ctype: str, headers: dict[str, str] | None = None
    ) -> None:
        localweb.send(h, status, body, ctype, CSP, headers)  # type: ignore[arg-type]

    def _page(self, h: Handler, body: str, status: HTTPStatus = HTTPStatus.OK) -> None:
        inner = f"<style>{CSS}</style>{body}<script>{JS}</script>"
        self._send(h, status, staffpages.render_body(self.lang, word("title", self.lang), Markup(inner)), "text/html")

    def _see(self, h: Handler, where: str) -> None:
        self._send(h, HTTPStatus.SEE_OTHER, "", "text/plain", {"Location": where})

    def _redirect_to(self, h: Handler, result_key: str | None) -> None:
        self._see(h, f"{PREFIX}/r/{result_key}" if result_key else PREFIX)

    def _preview(self, h: Handler) -> None:
        data = self.desk.preview()
        if data is None:
            self._send(h, HTTPStatus.NOT_FOUND, "", "text/plain")
            return
        self._send(h, HTTPStatus.OK, data, "image/jpeg")

    def _start(self, h: Handler, f: dict[str, str]) -> None:
        if f.get("senior"):
            key, problems = self.desk.choose(f["senior"])
        else:
            key, problems = self.desk.new(
                f.get("id", ""), f.get("name", ""), f.get("birth", ""), f.get("hukou", ""), f.get("card", "")
            )
        if key is not None:
            self._see(h, f"{PREFIX}/d/{key}")
            return
        self._page(h, self._find(h.screen, "", f, problems), HTTPStatus.UNPROCESSABLE_ENTITY)

    def _upload(self, h: Handler, session: Session) -> None:
        try:
            length = int(h.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 < length <= MAX_UPLOAD_BODY:
            h.close_connection = True  # the unread body must not be parsed as the next request
            self._page(h, _flash([word("too_big" if length > 0 else "bad_upload", self.lang)]) + _back(self.lang),
                       HTTPStatus.REQUEST_ENTITY_TOO_LARGE if length > 0 else HTTPStatus.BAD_REQUEST)
            return
        fields, files = parse_multipart(h.headers.get("Content-Type", ""), h.rfile.read(length))
        if not h.screen.token_ok(fields.get("token", "")):
            log.warning("staff screen: enrolment upload without a valid token refused")
            h._error(HTTPStatus.FORBIDDEN, "e403")
            return
        self._redirect_to(h, self.desk.upload(fields.get("d", ""), files[: MAX_UPLOADS + 1], session))

    # -- bodies ---------------------------------------------------------------------------------------

    def _find(
        self, screen: StaffScreen, query: str, typed: dict[str, str] | None = None, problems: list[str] | None = None
    ) -> str:
        lang, e, t = self.lang, html.escape, screen.token
        v = typed or {}
        found, more = screen.find(query)
        parts = [
            f'<h1>{e(word("title", lang))}</h1>{_flash(problems or [])}',
            '<div class="enrol-cols"><section class="enrol-find">',
            f'<h2>{e(word("find_h", lang))}</h2>',
            f'<form class="find" method="get" action="{PREFIX}"><input name="q" type="search" '
            f'value="{e(query, quote=True)}" placeholder="{e(word("find", lang), quote=True)}" '
            f'aria-label="{e(word("find", lang), quote=True)}" autocomplete="off" maxlength="40">'
            f'<button class="search">{e(word("search", lang))}</button></form>',
        ]
        if query.strip() and not found:
            parts.append(f'<p class="empty">{e(word("none", lang, q=query.strip()))}</p>')
        if found:
            parts.append('<ul class="found">')
            for fd in found[:MAX_FOUND]:
                en = fd.entry
                parts.append(
                    f'<li class="person"><span class="pname">{e(en.name)}</span>'
                    f'<span class="sid">{e(en.senior_id)}</span>'
                    f'<form class="decide pick" method="post" action="{PREFIX}/start">{_hidden("token", t)}'
                    f'{_hidden("senior", en.senior_id)}<button class="yes">{e(word("pick", lang, name=en.name))}'
                    "</button></form></li>"
                )
            parts.append("</ul>")
        parts.append(f'</section><section class="enrol-new"><h2>{e(word("new_h", lang))}</h2>'
                     f'<form class="decide newsenior" method="post" action="{PREFIX}/start">{_hidden("token", t)}')
        for name, key, kind, extra in (
            ("id", "f_id", "text", ' maxlength="40" required'), ("name", "f_name", "text", ' maxlength="40" required'),
            ("birth", "f_birth", "text", f' required maxlength="10" inputmode="numeric" '
             f'placeholder="{e(word("f_birth_eg", lang), quote=True)}"'),
            ("hukou", "f_hukou", "text", ' maxlength="40" required'), ("card", "f_card", "text", ' maxlength="40"'),
        ):
            value = v.get(name, screen.cfg.centre.district if name == "hukou" else "")
            parts.append(f'<label>{e(word(key, lang))}<input name="{name}" type="{kind}" '
                         f'value="{e(value, quote=True)}" autocomplete="off"{extra}></label>')
        parts.append(f'<button class="yes">{e(word("next", lang))}</button></form></section></div>')
        parts.append(_back(lang))
        return "".join(parts)

    def _chosen(self, screen: StaffScreen, key: str) -> str:
        lang, e = self.lang, html.escape
        d = self.desk.draft(key)
        if d is None:
            return _flash([word("gone", lang)]) + self._find(screen, "")
        self.desk.preview()  # ask the daemon for its frames now: the preview is there when the page shows
        s = d.senior
        who = word("who", lang, name=s.name, id=s.senior_id, born=s.birth_date.isoformat())
        return (
            f'<h1>{e(word("title", lang))}：{e(who)}</h1>'
            f'<p class="intro">{e(word("known" if d.known else "fresh", lang))}</p>'
            '<div class="enrol-cols"><section class="enrol-cam">'
            f'<h2>{e(word("cam_h", lang))}</h2>'
            f'<div class="preview"><img id="enrol-preview" src="{PREFIX}/preview.jpg" '
            f'alt="{e(word("cam_alt", lang), quote=True)}">'
            f'<p class="wait" id="enrol-wait">{e(word("cam_wait", lang))}</p></div>'
            f'<p class="how">{e(word("cam_do", lang))}</p>'
            f'<form class="decide capture" method="post" action="{PREFIX}/capture">{_hidden("token", screen.token)}'
            f'{_hidden("d", key)}<button class="yes" data-busy="{e(word("cam_busy", lang), quote=True)}">'
            f'{e(word("cam_go", lang, n=PHOTOS))}</button></form></section>'
            f'<section class="enrol-up"><h2>{e(word("up_h", lang))}</h2><p class="how">{e(word("up_do", lang))}</p>'
            f'<form class="decide upload" method="post" action="{PREFIX}/upload" enctype="multipart/form-data">'
            f'{_hidden("token", screen.token)}{_hidden("d", key)}'
            '<input type="file" name="photo" accept="image/*" multiple required>'
            f'<button class="yes">{e(word("up_go", lang))}</button></form></section></div>'
            f'<a class="back" href="{PREFIX}">{e(word("next_senior", lang))}</a>'
        )

    def _result(self, key: str) -> str:
        lang, e = self.lang, html.escape
        out: Outcome | None = self.desk.outcome(key)
        if out is None:
            return _flash([word("gone", lang)]) + _back(lang)
        name = f"{out.draft.senior.name}（{out.draft.senior.senior_id}）"
        parts = [f'<h1>{e(word("title", lang))}</h1>']
        if out.enrolled:
            head = word("res_ok", lang, name=name, n=out.added, total=out.total)
            kiosk = e(word("res_kiosk", lang))
            parts.append(f'<div class="flash ok enrol-result" role="status">{e(head)}<br>{kiosk}</div>')
        else:
            no = e(word("res_no", lang, name=name))
            parts.append(f'<div class="flash warn enrol-result" role="status">{no}</div>')
        parts += [f'<p class="problem">{e(p)}</p>' for p in out.problems + out.notes]
        if out.photos:
            parts.append('<ul class="photos">')
            for p in out.photos:
                mark = "✓" if p.accepted else "✗"
                text = word("ok", lang) if p.accepted else p.text
                state = "accepted" if p.accepted else "refused"
                parts.append(f'<li class="photo {state}" data-code="{e(p.code, quote=True)}">'
                             f'<span class="mark">{mark}</span><span class="label">{e(p.label)}</span>'
                             f'<span class="text">{e(text)}</span></li>')
            parts.append("</ul>")
        if self.desk.draft(out.key) is not None:
            parts.append(f'<a class="back again" href="{PREFIX}/d/{out.key}">{e(word("again", lang))}</a> ')
        parts.append(f'<a class="back" href="{PREFIX}">{e(word("next_senior", lang))}</a>')
        return "".join(parts)


def _hidden(name: str, value: str) -> str:
    return f'<input type="hidden" name="{name}" value="{html.escape(value, quote=True)}">'


def _flash(texts: list[str]) -> str:
    return "".join(f'<div class="flash warn" role="alert">{html.escape(t)}</div>' for t in texts)


def _back(lang: Language) -> str:
    return f'<a class="back" href="/">{html.escape(word("back", lang))}</a>'


def parse_multipart(content_type: str, body: bytes) -> tuple[dict[str, str], list[tuple[str, bytes]]]:
    """A multipart/form-data body -> (text fields, [(file name, bytes)] of the file fields). Anything that is not
    multipart gives nothing (the token check then refuses it)."""
    if not content_type.lower().startswith("multipart/form-data"):
        return {}, []
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1", "replace") + b"\r\n\r\n" + body
    )
    fields: dict[str, str] = {}
    files: list[tuple[str, bytes]] = []
    if not msg.is_multipart():
        return {}, []
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        data = part.get_payload(decode=True)
        data = data if isinstance(data, bytes) else b""
        filename = part.get_filename()
        if filename is not None:
            files.append((filename[:80], data))
        else:
            fields[name] = data.decode("utf-8", "replace")
    return fields, files
