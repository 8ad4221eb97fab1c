"""The senior-facing kiosk screen (edge/screens/display.py): a real server on a free loopback port, real HTTP, and
decisions made by the real Pipeline (with test_confirm's light fakes) handed over by `meal-edge run`'s own
callback (`edge.cli.main.run_feedback`)."""

from __future__ import annotations

import html
import json
import logging
import re
import shutil
import socket
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from urllib.error import HTTPError

import pytest
import test_confirm as confirm_tests
from conftest import free_port
from test_confirm import at, light_pipeline

from edge.cli.main import run_feedback
from edge.config import DEFAULT_CONFIG, Config, ConfigError, DisplayConfig, parse_config
from edge.meals.feedback import Decision
from edge.meals.rules import Senior
from edge.meals.speech import speech_seconds
from edge.recognition.decide import Verdict
from edge.screens.display import Display
from edge.store import Store

# test_confirm's config (store under tmp_path, language en) and store (senior S0001 "Wang Fang", born 1950)
cfg = confirm_tests.cfg
store = confirm_tests.store


def with_lang(config: Config, lang: str) -> Config:
    return config.model_copy(update={"centre": config.centre.model_copy(update={"language": lang})})


def settings(port: int, **kw: object) -> DisplayConfig:
    return DisplayConfig(listen=f"127.0.0.1:{port}", **kw)


@pytest.fixture
def display(cfg: Config) -> Iterator[Display]:
    d = Display(settings(free_port()), lang=cfg.centre.language, tz=cfg.centre.tz)
    assert d.start()
    try:
        yield d
    finally:
        d.stop()


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: str

    def json(self) -> dict[str, object]:
        out = json.loads(self.body)
        assert isinstance(out, dict)
        return out


def fetch(url: str, *, method: str = "GET", host: str | None = None, data: bytes | None = None) -> Answer:
    req = urllib.request.Request(url, method=method, data=data)
    if host:
        req.add_header("Host", host)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return Answer(r.status, dict(r.headers), r.read().decode("utf-8"))
    except HTTPError as e:
        return Answer(e.code, dict(e.headers), e.read().decode("utf-8"))


def latest(d: Display) -> dict[str, object]:
    assert d.url is not None
    a = fetch(d.url + "api/latest")
    assert a.status == 200 and a.headers["Content-Type"] == "application/json; charset=utf-8"
    return a.json()




ACCEPT = Verdict("accept", "S0001", 0.2, 0.2, 5)


# -- the JSON -----------------------------------------------------------------------------------------------


def test_idle_before_any_decision(display: Display) -> None:
    j = latest(display)
    assert j == {
        "seq": 0,
        "kind": "idle",
        "message": "Please look at the camera",
        "name": None,
        "payable_fen": 0,
        "decided_at": None,
        "show_seconds": 8.0,
        "age_s": None,
        "speech": "",
        "hold_s": 0.0,
        "speak": True,
    }


def test_run_feedback_prints_and_shows_each_pipeline_decision(
    display: Display, cfg: Config, store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    """`meal-edge run`'s callback, fed by the real Pipeline: stdout as before, and the screen."""
    pipe = light_pipeline(cfg, store, on_decision=run_feedback(display))
    d = pipe.finalise(1, ACCEPT, at("11:45"), 1.0)
    assert d.kind == "meal" and d.payable_fen == 700
    # stdout goes to the journal: the senior id, never the name (issue 12)
    assert capsys.readouterr().out == f"[11:45:00] MEAL     {d.senior_id} lunch ({', '.join(d.reasons)})\n"
    assert d.senior_id == "S0001" and d.reasons
    j = latest(display)
    assert (j["seq"], j["kind"], j["name"], j["payable_fen"]) == (1, "meal", "Wang Fang", 700)
    assert j["message"] == d.message == "Welcome Wang Fang: lunch, please pay ¥7.00 (¥3.00 subsidy applied)"
    assert j["decided_at"] == "2026-11-30T11:45:00+08:00" and j["show_seconds"] == 8.0
    assert isinstance(j["age_s"], float) and 0 <= j["age_s"] < 5
    # nothing for the screen beyond what the senior may see
    assert set(j) == {"seq", "kind", "message", "name", "payable_fen", "decided_at", "show_seconds", "age_s",
                      "speech", "hold_s", "speak"}
    assert j["speech"] == d.speech == "Wang Fang, lunch checked in. Please pay seven yuan."
    assert j["hold_s"] == 8.0  # the sentence takes less than show_seconds

    # the same senior again: a repeat replaces it (no amount to pay)
    again = pipe.finalise(2, ACCEPT, at("11:46"), 2.0)
    assert again.kind == "repeat"
    j = latest(display)
    assert (j["seq"], j["kind"], j["name"], j["payable_fen"]) == (2, "repeat", "Wang Fang", 0)
    assert j["message"] == "You are already checked in for this meal"

    # a stranger: no name; a confirm: the candidate's name as the decision gives it
    pipe.finalise(3, Verdict("unknown", None, 0.7, 0.0, 5, ("too_far",)), at("11:47"), 3.0)
    j = latest(display)
    assert (j["seq"], j["kind"], j["name"]) == (3, "unknown", None)
    assert j["message"] == "Not recognised: please see staff to check in"
    pipe.finalise(4, Verdict("confirm", "S0001", 0.41, 0.03, 5, ("ambiguous_margin",)), at("11:48"), 4.0)
    j = latest(display)
    assert (j["seq"], j["kind"], j["name"], j["message"]) == (
        4, "confirm", "Wang Fang", "Please wait: staff will confirm your check-in"
    )
    assert capsys.readouterr().out.count("\n") == 3  # every decision still printed


def test_a_refusal_is_shown_without_the_name_and_closed_outside_meal_times(
    display: Display, cfg: Config, store: Store
) -> None:
    store.add_senior(Senior("S0002", "Li Wei", date(1948, 5, 1), "xuhui", status="suspended"))
    pipe = light_pipeline(cfg, store, on_decision=display.publish)
    d = pipe.finalise(1, replace(ACCEPT, senior_id="S0002"), at("11:45"), 1.0)
    assert d.kind == "refused" and d.name == "Li Wei"
    j = latest(display)
    assert (j["kind"], j["name"], j["payable_fen"]) == ("refused", None, 0)
    assert j["message"] == "Please see staff"  # why (a suspended card) is for staff, not for the queue

    pipe.clock = lambda _f: at("15:00")
    d = pipe.finalise(2, ACCEPT, at("15:00"), 2.0)
    assert d.kind == "closed"
    j = latest(display)
    assert (j["seq"], j["kind"]) == (2, "closed")
    assert j["message"] == "The centre is not serving meals now. Next: dinner at 16:30"
    assert d.speech == "The centre is not serving meals now. Next: dinner at half past four in the afternoon"


def test_time_is_the_centres_and_an_empty_message_still_says_something(display: Display) -> None:
    d = Decision("refused", 1, datetime(2026, 11, 30, 3, 45, tzinfo=UTC), 0.0, message="", name="X")
    display.publish(d)
    j = latest(display)
    assert j["decided_at"] == "2026-11-30T11:45:00+08:00"
    assert j["message"] == "Please see staff"


def test_age_follows_the_daemons_clock() -> None:
    now = [100.0]
    d = Display(settings(0, show_seconds=3), lang="zh", clock=lambda: now[0])
    d.publish(Decision("unknown", 1, at("11:45"), 0.0, message="未能识别，请找工作人员签到"))
    now[0] = 102.5
    j = d.latest()
    assert (j["seq"], j["age_s"], j["show_seconds"], j["message"]) == (1, 2.5, 3.0, "未能识别，请找工作人员签到")


def test_publish_from_many_threads(display: Display) -> None:
    """Concurrent publishes each get their own number; readers meanwhile see it only grow."""
    n_threads, each = 8, 150
    seen: list[int] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            seen.append(int(latest(display)["seq"]))  # type: ignore[call-overload]

    def writer(i: int) -> None:
        for k in range(each):
            display.publish(Decision("unknown", i * 1000 + k, at("11:45"), 0.0, message=f"m{i}-{k}"))

    r = threading.Thread(target=reader)
    r.start()
    writers = [threading.Thread(target=writer, args=(i,)) for i in range(n_threads)]
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    stop.set()
    r.join()
    assert display.current().seq == n_threads * each
    assert latest(display)["seq"] == n_threads * each
    assert seen == sorted(seen)


def test_publish_never_raises_into_the_pipeline(caplog: pytest.LogCaptureFixture) -> None:
    d = Display(settings(0))
    with caplog.at_level(logging.ERROR, logger="edge.screens.display"):
        d.publish(object())  # type: ignore[arg-type]
    assert "could not show" in caplog.text and d.current().seq == 0


# -- the port -----------------------------------------------------------------------------------------------


def test_port_in_use_logs_an_error_and_check_in_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        d = Display(settings(port), lang="en")
        with caplog.at_level(logging.ERROR, logger="edge.screens.display"):
            assert d.start() is False
        [rec] = [r for r in caplog.records if r.levelno == logging.ERROR]
        msg = rec.getMessage()
        assert f"127.0.0.1:{port}" in msg and f"port {port}" in msg and "[display] listen" in msg
        assert "check-in goes on" in msg
        assert d.url is None
        d.publish(Decision("meal", 1, at("11:45"), 0.0, message="Welcome", name="A", payable_fen=700))
        assert d.latest()["seq"] == 1
        d.stop()  # nothing to stop: fine


def test_stop_frees_the_port() -> None:
    port = free_port()
    d = Display(settings(port))
    assert d.start() and d.url == f"http://127.0.0.1:{port}/"
    d.stop()
    again = Display(settings(port))
    assert again.start()
    again.stop()


# -- the page -----------------------------------------------------------------------------------------------


def body_attrs(page: str) -> dict[str, str]:
    m = re.search(r"<body ([^>]*)>", page)
    assert m
    return {k: html.unescape(v) for k, v in re.findall(r'data-([a-z]+)="([^"]*)"', m.group(1))}


@pytest.mark.parametrize(
    "lang, prompt, pay, voice",
    [("zh", "请看摄像头", "请付 ¥{yuan}", "zh-CN"), ("en", "Please look at the camera", "Please pay ¥{yuan}", "en-US")],
)
def test_page_in_the_centres_language(cfg: Config, lang: str, prompt: str, pay: str, voice: str) -> None:
    config = with_lang(cfg, lang)
    d = Display.from_config(config.model_copy(update={"display": settings(free_port(), show_seconds=5, speak=False)}))
    assert d.start() and d.url
    try:
        a = fetch(d.url)
        assert a.status == 200 and a.headers["Content-Type"] == "text/html; charset=utf-8"
        page = a.body
        assert f'<html lang="{voice}">' in page
        assert f'<p id="msg" class="msg" role="status" aria-live="assertive">{prompt}</p>' in page
        attrs = body_attrs(page)
        assert attrs == {
            "show": "5", "speak": "0", "voice": voice, "pay": pay, "idle": prompt,
            "offline": "请找工作人员" if lang == "zh" else "Please see staff", "poll": "300", "lost": "5000",
            "rate": "0.9",
        }
        assert latest(d)["message"] == prompt
        # the idle screen names the centre's serving hours (the centre's name when the config has one)
        hours = "供餐时间　午餐 10:30–13:30　晚餐 16:30–18:30" if lang == "zh" else (
            "Meal times: lunch 10:30–13:30, dinner 16:30–18:30")
        assert f'<p class="hours">{hours}</p>' in page
    finally:
        d.stop()


def test_page_loads_nothing_from_elsewhere_and_is_read_only(display: Display) -> None:
    assert display.url
    a = fetch(display.url)
    page = a.body
    for external in ("http:", "https:", "//", "src=", "href=", "url(", "@import", "<link", "<iframe", "<img"):
        assert external not in page.replace("'//'", ""), external
    csp = a.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert a.headers["X-Frame-Options"] == "DENY" and a.headers["Cache-Control"] == "no-store"
    assert fetch(display.url + "api/latest", method="POST", data=b"x").status == 501
    assert fetch(display.url + "nothing-here").status == 404
    assert fetch(display.url, method="HEAD").status == 200


def test_another_host_name_is_refused_on_loopback(display: Display) -> None:
    assert display.url
    assert fetch(display.url + "api/latest", host="attacker.example").status == 403
    assert fetch(display.url, host="attacker.example:8081").status == 403
    assert fetch(display.url + "api/latest", host="localhost").status == 200


# -- the page's script, run by node against a fake browser ---------------------------------------------------

_HARNESS = r"""
const [script, attrs] = JSON.parse(require('fs').readFileSync(0, 'utf8'));
let now = 0, tid = 0; const timers = [];
global.setTimeout = (fn, ms) => { const id = ++tid; timers.push({id, at: now + (ms || 0), fn}); return id; };
global.clearTimeout = (id) => { const i = timers.findIndex(t => t.id === id); if (i >= 0) timers.splice(i, 1); };
Date.now = () => now;
const els = {name: {textContent: ''}, pay: {textContent: ''}, msg: {textContent: ''}};
const attr = (k) => { const v = attrs[k.replace(/^data-/, '')]; return v === undefined ? null : v; };
const body = {className: 'idle', getAttribute: attr};
global.document = {body, getElementById: (id) => els[id]};
global.window = global;
const spoken = [];
global.SpeechSynthesisUtterance = function (t) { this.text = t; };
let cancels = 0;  // still speaking the last one when the next comes: cut short, then the new one after a wait
global.speechSynthesis = {speaking: false, pending: false, getVoices: () => [],
  cancel() { cancels++; this.speaking = false; }, speak(u) { spoken.push([u.text, u.lang]); this.speaking = true; }};
let state = {seq: 0, kind: 'idle', message: attrs.idle, name: null, payable_fen: 0, decided_at: null, at: 0};
let down = false, polls = 0;
global.fetch = () => { polls++; if (down) return Promise.reject(new Error('down'));
  const j = Object.assign({}, state, {age_s: state.seq ? (now - state.at) / 1000 : null}); delete j.at;
  return Promise.resolve({ok: true, json: () => Promise.resolve(j)}); };
const flush = async () => { for (let i = 0; i < 6; i++) await new Promise(r => setImmediate(r)); };
async function advance(ms) {
  const end = now + ms;
  for (;;) { timers.sort((a, b) => a.at - b.at); const t = timers[0]; if (!t || t.at > end) break;
    timers.shift(); now = t.at; t.fn(); await flush(); }
  now = end; await flush();
}
function publish(d) { state = Object.assign({seq: state.seq + 1, name: null, payable_fen: 0, at: now}, d); }
const out = [];
function snap(label) { out.push({label, cls: body.className, name: els.name.textContent, pay: els.pay.textContent,
  msg: els.msg.textContent, spoken: spoken.length, polls}); }
(async () => {
  publish({kind: 'meal', message: 'OLD', name: 'Old', payable_fen: 100});  // there before the page loads
  now += 1000;
  new Function(script)();
  await flush(); snap('loaded');
  publish({kind: 'meal', message: 'MEAL', name: 'Wang Fang', payable_fen: 700});
  await advance(300); snap('meal');
  await advance(3000); snap('meal later');
  await advance(5000); snap('after show');
  publish({kind: 'confirm', message: 'WAIT', name: 'Wang Fang'});
  await advance(300); snap('confirm');
  publish({kind: 'unknown', message: 'STAFF'});
  await advance(300); snap('unknown');
  down = true; await advance(6000); snap('offline');
  down = false; await advance(300); snap('back');
  state = {seq: 0, kind: 'idle', message: attrs.idle, name: null, payable_fen: 0, decided_at: null, at: now};
  await advance(300); snap('restarted');
  publish({kind: 'repeat', message: 'AGAIN', name: 'Wang Fang'});
  await advance(300); snap('repeat');
  publish({kind: 'meal', message: 'LONG', speech: 'SAY', name: 'Wang Fang', payable_fen: 750, hold_s: 12});
  await advance(300); snap('long');
  await advance(10000); snap('long later');
  await advance(2000); snap('long over');
  publish({kind: 'turn', message: 'TURN', speech: 'TURN', hold_s: 4, speak: false});
  await advance(300); snap('quiet hint');
  publish({kind: 'fault', message: 'BROKEN', speech: 'BROKEN', hold_s: 86400});
  await advance(60000); snap('fault');
  console.log(JSON.stringify({out, spoken, cancels}));
})();
"""


def test_the_page_script_shows_speaks_once_and_returns_to_the_prompt(display: Display) -> None:
    node = shutil.which("node") or shutil.which("nodejs")
    if node is None:
        pytest.skip("node is not installed: the page's script is checked with it")
    assert display.url
    page = fetch(display.url).body
    script = page[page.index("<script>") + len("<script>") : page.index("</script>")]
    attrs = body_attrs(page)
    p = subprocess.run(
        [node, "-e", _HARNESS], input=json.dumps([script, attrs]), capture_output=True, text=True, timeout=20
    )
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout)
    snaps = {s["label"]: s for s in res["out"]}
    prompt = "Please look at the camera"

    # a result already there when the page loads is shown for the rest of its time, not spoken again
    assert snaps["loaded"]["cls"] == "meal" and snaps["loaded"]["msg"] == "OLD" and snaps["loaded"]["spoken"] == 0
    m = snaps["meal"]
    assert (m["cls"], m["name"], m["pay"], m["msg"]) == ("meal", "Wang Fang", "Please pay ¥7.00", "MEAL")
    assert m["spoken"] == 1 and snaps["meal later"]["spoken"] == 1 and snaps["meal later"]["cls"] == "meal"
    assert snaps["meal"]["polls"] >= 2 and snaps["meal later"]["polls"] >= snaps["meal"]["polls"] + 9  # ~300 ms
    a = snaps["after show"]  # 8 s after it was published
    assert (a["cls"], a["name"], a["pay"], a["msg"]) == ("idle", "", "", prompt)
    c = snaps["confirm"]
    assert (c["cls"], c["name"], c["msg"]) == ("confirm", "Wang Fang", "WAIT")
    assert (snaps["unknown"]["cls"], snaps["unknown"]["name"], snaps["unknown"]["pay"]) == ("calm", "", "")
    assert (snaps["offline"]["cls"], snaps["offline"]["msg"]) == ("offline", "Please see staff")
    # back: the same result again is shown, but not said twice
    assert snaps["back"]["cls"] == "calm" and snaps["back"]["spoken"] == snaps["unknown"]["spoken"] == 3
    assert snaps["restarted"]["cls"] == "idle"
    assert snaps["repeat"]["cls"] == "repeat" and snaps["repeat"]["name"] == "Wang Fang"
    # the voice says the speech (amounts in words) and the screen waits for a long one (hold_s)
    assert (snaps["long"]["cls"], snaps["long"]["msg"], snaps["long"]["pay"]) == ("meal", "LONG", "Please pay ¥7.50")
    assert snaps["long later"]["cls"] == "meal" and snaps["long over"]["cls"] == "idle"
    assert (snaps["quiet hint"]["cls"], snaps["quiet hint"]["msg"]) == ("hint", "TURN")  # shown, not said again
    assert (snaps["fault"]["cls"], snaps["fault"]["msg"]) == ("fault", "BROKEN")  # stays while the camera is away
    assert res["spoken"] == [["MEAL", "en-US"], ["WAIT", "en-US"], ["STAFF", "en-US"], ["AGAIN", "en-US"],
                             ["SAY", "en-US"], ["BROKEN", "en-US"]]


# -- config -------------------------------------------------------------------------------------------------


def test_display_config_defaults_and_a_bad_listen_names_the_line() -> None:
    d = parse_config(DEFAULT_CONFIG).display
    assert (d.enabled, d.listen, d.address, d.show_seconds, d.speak) == (True, "127.0.0.1:8081", ("127.0.0.1", 8081),
                                                                           8.0, True)
    text = DEFAULT_CONFIG.replace('listen = "127.0.0.1:8081"', 'listen = "8081"')
    with pytest.raises(ConfigError, match=r"line \d+: display.listen: .*not HOST:PORT"):
        parse_config(text, "kiosk.toml")
    with pytest.raises(ConfigError, match="display.show_seconds"):
        parse_config(DEFAULT_CONFIG.replace("show_seconds = 8", "show_seconds = 0"))


def test_the_page_itself_carries_no_decision() -> None:
    """Names and amounts travel only in /api/latest; the page is the same shell whatever happened."""
    d = Display(settings(0), lang="zh")
    before = d.page()
    d.publish(Decision("meal", 1, at("11:45"), 0.0, message="王芳，您好！", name="王芳", payable_fen=700))
    assert d.page() == before and "王芳" not in before


# -- waiting for staff, long sentences, hints and the camera --------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_please_wait_stays_until_staff_answer_and_names_nobody_on_a_liveness_doubt() -> None:
    d = Display(settings(0, confirm_wait_seconds=90), lang="zh")
    wait = Decision("confirm", 1, at("11:45"), 0.0, message="请稍候", name="王芳", reasons=("ambiguous_margin",),
                    confirmation_id=7)
    d.publish(wait)
    assert (d.latest()["name"], d.latest()["hold_s"]) == ("王芳", 90)
    d.publish(replace(wait, reasons=("liveness_not_confirmed", "planar_motion")))
    assert (d.latest()["name"], d.latest()["hold_s"]) == (None, 90)  # maybe a photo of her: not her name
    d.publish(replace(wait, confirmation_id=None))  # not kept (a store failure): no answer will come
    assert d.latest()["hold_s"] == 8


def test_a_long_sentence_holds_the_screen_while_it_is_said() -> None:
    d = Display(settings(0, show_seconds=3), lang="zh")
    d.publish(Decision("meal", 1, at("11:45"), 0.0, message="王芳", name="王芳", payable_fen=1205,
                       speech="王芳，午餐签到成功，按原价，请付十二元零五分。"))
    j = d.latest()
    assert j["hold_s"] >= speech_seconds(str(j["speech"]), "zh") + 1.0 > 3


def test_a_hint_shows_once_needed_and_never_over_a_result() -> None:
    clock = Clock()
    d = Display(settings(0), lang="zh", clock=clock)
    d.hint("closer")
    assert d.latest()["kind"] == "idle"  # a face only passing by
    clock.t += 1.2
    d.hint("closer")
    j = d.latest()
    assert (j["kind"], j["message"], j["speech"], j["speak"], j["hold_s"]) == ("closer", "请走近一点", "请走近一点",
                                                                               True, 4.0)
    clock.t += 4.0
    d.hint("closer")  # still needed after it went: shown again, but not said again so soon
    assert (d.latest()["seq"], d.latest()["speak"]) == (2, False)
    d.hint("turn")
    clock.t += 1.1
    d.hint("turn")
    assert (d.latest()["kind"], d.latest()["message"], d.latest()["speak"]) == ("turn", "请正对屏幕", True)
    d.publish(Decision("unknown", 1, at("11:45"), 0.0, message="未能识别，请找工作人员签到"))
    seq = d.latest()["seq"]
    clock.t += 2
    d.hint("turn")
    assert d.latest()["seq"] == seq  # the senior is reading a result


def test_a_camera_that_is_gone_says_the_kiosk_is_out_of_order() -> None:
    clock = Clock()
    d = Display(settings(0), lang="zh", clock=clock)
    d.camera(True)
    assert d.latest()["seq"] == 0
    d.camera(False)
    j = d.latest()
    assert (j["kind"], j["message"], j["speech"]) == ("fault", "设备故障，请找工作人员", "设备故障，请找工作人员")
    assert j["hold_s"] >= 3600
    clock.t += 5
    d.hint("closer")
    d.camera(False)
    assert d.latest()["seq"] == 1  # nothing else while it lasts
    d.camera(True)
    assert (d.latest()["kind"], d.latest()["message"]) == ("idle", "请看摄像头")
