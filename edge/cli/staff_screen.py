"""`meal-edge staff-screen` with every page: the screen itself (edge/screens/staffserver.py) plus the pages that
need the enrolment code, which sits above the screens in the layer order (scripts/check_imports.py): the
enrolment page 录入 (enroll/enrol_page.py)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from edge.config import Config
from edge.screens import staffserver


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    staffserver.add_parser(subparsers)
    subparsers.choices["staff-screen"].set_defaults(func=run)


def pages(cfg: Config) -> Sequence[staffserver.ExtraPage]:
    from enroll.enrol_desk import EnrolDesk
    from enroll.enrol_page import EnrolPage

    return [EnrolPage(EnrolDesk(cfg))]


def run(args: argparse.Namespace) -> int:
    return staffserver.run(args, pages)
