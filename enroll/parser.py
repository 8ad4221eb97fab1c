"""`meal-enroll`'s command line: the sub-commands and their arguments (enroll/cli.py runs them)."""

from __future__ import annotations

import argparse
import os
from datetime import date
from typing import Any

from edge.meals.rules import STATUSES


class UsageError(Exception):
    """Bad arguments or config: exit 2 with this message."""


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # no abbreviations: `--pin 1234` must be an error, not the file name of --pin-file
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        # argparse exits the process; we raise so main() can return 2 (and tests can call main()).
        raise UsageError(f"{self.prog}: {message} (see `{self.prog} --help`)")


def _birth_date(text: str) -> date:
    from enroll.roster import parse_birth_date

    try:
        return parse_birth_date(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _config_arg(p: argparse.ArgumentParser, top: bool) -> None:
    # Accepted before or after the sub-command; SUPPRESS keeps the sub-command's copy from
    # overwriting a value given before it.
    p.add_argument(
        "--config",
        metavar="FILE",
        default=os.environ.get("MEAL_EDGE_CONFIG") if top else argparse.SUPPRESS,
        help="the meal-edge TOML config (default: $MEAL_EDGE_CONFIG)",
    )


def _add_commands(sub: argparse._SubParsersAction[Any]) -> None:
    a = sub.add_parser("add", help="enrol one senior from 1 to 5 photos")
    _config_arg(a, False)
    a.add_argument("--senior-id", required=True, help="the id the district gave the senior")
    a.add_argument("--name", required=True)
    a.add_argument("--birth-date", required=True, type=_birth_date, metavar="YYYY-MM-DD")
    a.add_argument("--hukou", required=True, metavar="DISTRICT", help="hukou district")
    a.add_argument(
        "--force",
        action="store_true",
        help="enrol even if the face matches another enrolled senior, or (adding photos to an enrolled senior) "
        "does not look like their own photos",
    )
    a.add_argument("photos", nargs="+", metavar="PHOTO", help="1 to 5 photos of the senior's face")

    i = sub.add_parser("import", help="bulk enrolment from a roster CSV")
    _config_arg(i, False)
    i.add_argument("roster", metavar="ROSTER.csv", help="columns senior_id,name,birth_date,hukou,photos")
    i.add_argument(
        "--photos", metavar="DIR", help="folder the photo names are relative to (default: the CSV's)"
    )
    i.add_argument(
        "--force", action="store_true", help="enrol even if a face matches another enrolled senior"
    )
    i.add_argument(
        "--update",
        action="store_true",
        help="add the photos of rows whose senior is already enrolled (default: such rows are left unchanged)",
    )

    _add_capture(sub)

    ls = sub.add_parser("list", help="table of enrolled seniors")
    _config_arg(ls, False)
    ls.add_argument("--status", choices=STATUSES, help="only seniors with this status")

    sh = sub.add_parser("show", help="one senior's record")
    _config_arg(sh, False)
    sh.add_argument("senior_id", metavar="ID")

    st = sub.add_parser("set-status", help="mark a senior active, suspended or deceased")
    _config_arg(st, False)
    st.add_argument("senior_id", metavar="ID")
    st.add_argument("status", choices=STATUSES)

    rm = sub.add_parser("remove", help="remove a senior and erase their face templates for good")
    _config_arg(rm, False)
    rm.add_argument("senior_id", metavar="ID")
    rm.add_argument("--yes", "-y", action="store_true", help="do not ask (needed when not run on a terminal)")

    _add_staff(sub)


def _add_staff(sub: argparse._SubParsersAction[Any]) -> None:
    sf = sub.add_parser(
        "staff",
        help="staff accounts: who may log in to the staff screen and confirm with `meal-edge confirm`",
        description="Manage staff accounts. The PIN or password (6 to 128 characters) is asked for twice on the "
        "terminal, or read from the first line of --pin-file (`-`: standard input); never give it as an argument.",
    )
    _config_arg(sf, False)
    ssub = sf.add_subparsers(dest="staff_command", metavar="ACTION", parser_class=_Parser)
    ssub.required = True
    a = ssub.add_parser("add", help="add a staff account")
    _config_arg(a, False)
    a.add_argument("staff_id", metavar="STAFF_ID", help="letters, digits, '.', '_' or '-' (e.g. w01)")
    a.add_argument("--name", required=True, help="the staff member's name, as shown on the screen")
    a.add_argument("--role", choices=("staff", "manager"), default="staff")
    a.add_argument("--pin-file", metavar="FILE", help="read the PIN from the first line of FILE ('-': stdin)")
    ls = ssub.add_parser("list", help="list staff accounts (never their PINs)")
    _config_arg(ls, False)
    rm = ssub.add_parser("remove", help="remove a staff account (their audit lines stay)")
    _config_arg(rm, False)
    rm.add_argument("staff_id", metavar="STAFF_ID")


CAPTURE_EPILOG = """\
The senior stands in front of the kiosk camera, about where they stand at lunch, and looks at it.
Pictures are kept only when they pass the same checks as enrolment photos (one face, big enough, sharp,
not too dark or bright, looking straight) and differ a little from each other; what is wrong is said in
plain words while waiting. Ctrl-C stops without enrolling anything (with --partial: what was kept so far).

The kiosk program usually holds the camera. Stop it first and start it again afterwards:
  sudo systemctl stop meal-edge
  meal-enroll --config /etc/meal-edge/meal-edge.toml capture --senior-id S0001 --name 王芳 \\
      --birth-date 1950-03-01 --hukou 二七区
  sudo systemctl start meal-edge

--source: a device index (0), a camera device (/dev/video0) or URL (rtsp://...) is read live; a video file
or a folder of images is read frame by frame on the video's own clock, as fast as the checks run (tests).
Exit codes: 0 enrolled, 1 nothing usable or refused (the reason is printed), 2 usage, config or camera error.
"""


def _positive_seconds(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not v > 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds: {text!r}")
    return v


def _add_capture(sub: argparse._SubParsersAction[Any]) -> None:
    # roster's limit, not the service's policy: importing the service would load dlib for every command
    from enroll.roster import MAX_PHOTOS as cap

    c = sub.add_parser(
        "capture",
        help="enrol one senior from the kiosk camera, hands-free (stop meal-edge first)",
        description="Enrol one senior from the kiosk camera: a few good, different pictures in a few seconds.",
        epilog=CAPTURE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _config_arg(c, False)
    c.add_argument("--senior-id", required=True, help="the id the district gave the senior")
    # Optional, unlike `add`: an enrolled senior is found by id; a new one needs all three.
    c.add_argument("--name", help="needed for a new senior (must match for an enrolled one)")
    c.add_argument("--birth-date", type=_birth_date, metavar="YYYY-MM-DD", help="needed for a new senior")
    c.add_argument("--hukou", metavar="DISTRICT", help="hukou district; needed for a new senior")
    c.add_argument(
        "--photos", type=int, default=3, metavar="N", help=f"pictures to keep, 1 to {cap} (default 3)"
    )
    c.add_argument(
        "--seconds", type=_positive_seconds, default=20.0, metavar="S", help="give up after S seconds (default 20)"
    )
    c.add_argument(
        "--source",
        metavar="SRC",
        help="camera index, device or URL, or a video file / image folder (default: [camera] source)",
    )
    c.add_argument(
        "--force", action="store_true", help="enrol even if the face matches another enrolled senior"
    )
    c.add_argument(
        "--partial", action="store_true", help="on Ctrl-C, still enrol the pictures kept so far (at least one)"
    )


def build_parser(prog: str = "meal-enroll") -> argparse.ArgumentParser:
    p = _Parser(prog=prog, description="Enrol seniors' faces for meal check-in (staff tool).")
    _config_arg(p, True)
    p.add_argument("-v", "--verbose", action="store_true", help="log details (and tracebacks) to stderr")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    _add_commands(sub)
    # `COMMAND --help` starts with what the command does
    for name, cmd in sub.choices.items():
        cmd.description = cmd.description or DESCRIPTIONS[name]
    return p


DESCRIPTIONS = {
    "add": "Enrol one senior from 1 to 5 photos, or add photos to an enrolled senior (they must look like the "
    "senior's own photos). Every photo is checked first; exit 1 if anything was refused.",
    "import": "Enrol the seniors of a roster CSV (senior_id,name,birth_date,hukou,photos), one line of output per "
    "row. Rows whose senior is already enrolled are left unchanged unless --update.",
    "list": "A table of the enrolled seniors: id, name, birth date, hukou, status and number of face templates.",
    "show": "One senior's record: details, status, whether they get the subsidy today, and their face templates.",
    "set-status": "Mark a senior active, suspended or deceased; the kiosk applies it at the next check-in.",
    "remove": "Remove a senior and erase their face templates for good (asks first; --yes does not ask).",
}
