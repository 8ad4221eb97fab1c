"""Every reason an enrolment can be refused has words on the staff screen (enroll/words.py), in Chinese and
English: found by reading the modules that make the codes, so a new code cannot be added without its text."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

from enroll import capture, quality, results, words

ROOT = Path(__file__).resolve().parent.parent
#: the modules that give a photo or an enrolment a reason code
MAKERS = (
    "enroll.quality", "enroll.results", "enroll.service", "enroll.photochecks", "enroll.capture", "enroll.enrol_desk"
)


def _code_names(tree: ast.AST) -> set[str]:
    """Names used as a reason code: Issue(X, ..), Problem(X, ..), _refuse(res, c, X, ..), `.code = X`
    (also in a tuple assignment), res.issues[X], res.messages[X]."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
            args = node.args
            if name in ("Issue", "Problem", "Flagged") and args:
                found |= {a.id for a in args[:1] if isinstance(a, ast.Name)}
            if name == "append" and isinstance(f, ast.Attribute) and isinstance(f.value, ast.Attribute) \
                    and f.value.attr == "warning_codes":
                found |= {a.id for a in args[:1] if isinstance(a, ast.Name)}
            if name == "_refuse" and len(args) >= 3:
                found |= {a.id for a in args[2:3] if isinstance(a, ast.Name)}
            if name == "PhotoRow" and len(args) >= 3:  # the enrolment page's own refusals (too large)
                found |= {a.attr for a in args[2:3] if isinstance(a, ast.Attribute)}
                found |= {a.id for a in args[2:3] if isinstance(a, ast.Name)}
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                elts = target.elts if isinstance(target, ast.Tuple) else [target]
                vals = node.value.elts if isinstance(node.value, ast.Tuple) else [node.value]
                for t, v in zip(elts, vals, strict=False):
                    if isinstance(t, ast.Attribute) and t.attr == "code" and isinstance(v, ast.Name):
                        found.add(v.id)
        elif isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute):
            if node.value.attr in ("issues", "messages") and isinstance(node.slice, ast.Name):
                found.add(node.slice.id)
    return found


def used_codes() -> dict[str, str]:
    """code -> where it is made, for every constant used as a reason code in MAKERS."""
    out: dict[str, str] = {}
    for name in MAKERS:
        mod = importlib.import_module(name)
        tree = ast.parse(Path(mod.__file__ or "").read_text(encoding="utf-8"))
        for const in sorted(_code_names(tree)):
            if not const.isupper():  # a parameter passing a code on (`_refuse`'s own body)
                continue
            value = getattr(mod, const, getattr(words, const, None))
            assert isinstance(value, str), f"{name}: {const} is used as a reason code but is not a str constant"
            out[value] = f"{name}.{const}"
    return out


def test_the_scan_finds_the_codes_it_must() -> None:
    found = used_codes()
    # every quality reason, every photo and problem code is made somewhere; the scan is not blind
    assert set(quality.REASONS) <= set(found)
    assert set(results.PHOTO_CODES) <= set(found)
    assert set(results.PROBLEM_CODES) <= set(found)
    assert set(results.WARNING_CODES) <= set(found)
    assert {capture.SAME_POSE, capture.NO_PICTURE, words.TOO_LARGE} <= set(found)


@pytest.mark.parametrize("code", sorted(set(quality.REASONS) | set(results.PHOTO_CODES) | set(results.PROBLEM_CODES)
                                        | set(results.WARNING_CODES)
                                        | {capture.SAME_POSE, capture.NO_PICTURE, words.TOO_LARGE, words.NO_FILE}))
def test_every_listed_code_has_chinese_and_english(code: str) -> None:
    assert code in words.CODES
    zh, en = words.reason(code, "zh", size="9 MB", limit="8 MB"), words.reason(code, "en", size="9 MB", limit="8 MB")
    assert re.search(r"[\u4e00-\u9fff]", zh) and zh != code, zh
    assert en and en != code and not re.search(r"[\u4e00-\u9fff]", en)


def test_no_code_made_anywhere_lacks_words() -> None:
    missing = {code: where for code, where in used_codes().items() if code not in words.CODES}
    assert not missing, f"reason codes without words in enroll/words.py: {missing}"


def test_the_words_the_staff_asked_for() -> None:
    assert words.reason(quality.TOO_SMALL, "zh") == "脸太小，请走近一点"
    assert "请只让老人一人入镜" in words.reason(quality.MANY_FACES, "zh")
    assert words.reason(quality.BLURRED, "zh").startswith("照片模糊，请保持不动")
    assert words.reason("some_new_code", "zh") == "some_new_code"  # shown as is, never hidden
