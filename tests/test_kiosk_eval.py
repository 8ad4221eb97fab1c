"""The kiosk-like evaluation: frame variation (pure functions), the trial's gallery with distractors,
slice files, image suffixes, exact bounds, and one small real-face run whose counts must add up."""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.lab.faceset import list_photos
from edge.lab.features import clopper_pearson_upper, rate
from edge.lab.kioskcmd import parse_set
from edge.lab.kioskframes import (
    STILL,
    Variation,
    exposure,
    jpeg,
    kiosk_frames,
    motion_blur,
    pad,
    presence_rng,
    resample,
    sensor_noise,
    shift_scale_rotate,
)
from edge.lab.kiosktrial import PhotoSet, build_kiosk_trial, distractor_id
from edge.lab.slices import SliceError, parse_slice, read_slice, slices_for
from edge.recognition.detect import load_image, readable_suffixes

SHARED = Path(os.environ.get("MEAL_EDGE_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
FACES = SHARED / "data" / "faces"
LFW = FACES / "lfw_deepfunneled"
RMFRD = FACES / "rmfrd_chinese"
SLICES = FACES / "slices"


def picture(h: int = 120, w: int = 100) -> np.ndarray:
    """A textured RGB picture (gradients and squares), so blur, noise and compression are measurable."""
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([(x * 2) % 256, (y * 2) % 256, ((x + y) * 3) % 256], axis=2).astype(np.uint8)
    img[30:60, 30:60] = (240, 30, 30)
    return img


# ------------------------------------------------------------------------------------------ frame variation


def test_frames_are_deterministic_per_key_and_differ_between_keys_and_frames() -> None:
    img = picture()
    a = kiosk_frames(img, presence_rng(0, "Ann/Ann_0001.jpg"))
    b = kiosk_frames(img, presence_rng(0, "Ann/Ann_0001.jpg"))
    c = kiosk_frames(img, presence_rng(1, "Ann/Ann_0001.jpg"))
    assert len(a) == Variation().frames == 5
    assert all(f.shape == img.shape and f.dtype == np.uint8 for f in a)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))
    # consecutive frames of one presence differ, but stay the same picture (correlated, not independent)
    diffs = [float(np.abs(a[i].astype(int) - a[i + 1].astype(int)).mean()) for i in range(4)]
    assert all(d > 0.5 for d in diffs)
    assert float(np.abs(a[0].astype(int) - img.astype(int)).mean()) < 60


def test_still_variation_returns_the_photo_itself() -> None:
    img = picture()
    frames = kiosk_frames(img, presence_rng(0, "x"), STILL)
    assert all(np.array_equal(f, img) for f in frames)


def test_variation_checks_its_ranges_and_names_its_parameters() -> None:
    with pytest.raises(ValueError):
        Variation(frames=0)
    with pytest.raises(ValueError):
        Variation(resolution=(0.0, 1.0))
    with pytest.raises(ValueError):
        Variation(jpeg=(90, 50))
    with pytest.raises(ValueError):
        Variation(blur_prob=1.5)
    assert Variation().tag() == Variation().tag()
    assert Variation(blur=6.0).tag() != Variation().tag()
    with pytest.raises(ValueError):
        kiosk_frames(picture()[:, :, 0], presence_rng(0, "x"))


def test_shift_moves_the_picture_by_the_asked_pixels() -> None:
    img = np.zeros((80, 80, 3), np.uint8)
    img[40, 40] = 255
    moved = shift_scale_rotate(img, 5, -3, 1.0, 0.0)
    y, x = np.unravel_index(int(np.argmax(moved[:, :, 0])), moved.shape[:2])
    assert (int(x), int(y)) == (45, 37)
    assert np.array_equal(shift_scale_rotate(img, 0, 0, 1.0, 0.0), img)
    bigger = shift_scale_rotate(np.pad(np.full((20, 20, 3), 255, np.uint8), ((30, 30), (30, 30), (0, 0))), 0, 0, 1.5, 0)
    assert int((bigger[:, :, 0] > 128).sum()) > 1.5**2 * 400 * 0.9


def test_motion_blur_smears_along_its_direction() -> None:
    img = np.zeros((41, 41, 3), np.uint8)
    img[20, 20] = 255
    assert np.array_equal(motion_blur(img, 0.0, 0.0), img)
    h = motion_blur(img, 7.0, 0.0)[:, :, 0]
    v = motion_blur(img, 7.0, 90.0)[:, :, 0]
    assert (h[20] > 0).sum() >= 5 and (h[:, 20] > 0).sum() == 1
    assert (v[:, 20] > 0).sum() >= 5 and (v[20] > 0).sum() == 1
    # blur keeps the mean brightness and lowers the gradient energy of a textured picture
    pic = picture()
    blurred = motion_blur(pic, 5.0, 30.0)
    assert abs(float(blurred.mean()) - float(pic.mean())) < 2
    assert np.abs(np.diff(blurred.astype(int), axis=1)).mean() < np.abs(np.diff(pic.astype(int), axis=1)).mean()


def test_exposure_noise_compression_and_resolution() -> None:
    pic = picture()
    assert np.array_equal(exposure(pic, 1.0), pic)
    dark = exposure(pic, 0.5)
    assert abs(float(dark.mean()) - float(pic.mean()) / 2) < 1
    assert exposure(pic, 3.0).max() == 255  # clipped, never wrapped
    noisy = sensor_noise(pic, 4.0, np.random.default_rng(0))
    assert 2.0 < float(np.std(noisy.astype(float) - pic.astype(float))) < 4.5
    assert np.array_equal(sensor_noise(pic, 0.0, np.random.default_rng(0)), pic)
    assert np.array_equal(jpeg(pic, 100), pic)
    low = jpeg(pic, 40)
    mse = float(((low.astype(float) - pic.astype(float)) ** 2).mean())
    assert 0 < mse and 10 * math.log10(255**2 / mse) > 20
    assert np.array_equal(resample(pic, 1.0), pic)
    soft = resample(pic, 0.5)
    assert soft.shape == pic.shape and not np.array_equal(soft, pic)


def test_pad_adds_a_black_border() -> None:
    pic = picture(100, 80)
    padded = pad(pic, 0.5)
    assert padded.shape == (200, 160, 3)
    assert np.array_equal(padded[50:150, 40:120], pic) and padded[:50].max() == 0
    assert pad(pic, 0.0) is pic


# ------------------------------------------------------------------------------------------ trials


def fake_set(name: str, people: dict[str, int], root: str | None = None, padding: float = 0.0) -> PhotoSet:
    base = Path(root or f"/faces/{name}")
    photos = {p: tuple(base / p / f"{p}_{i:04d}.jpg" for i in range(n)) for p, n in people.items()}
    return PhotoSet(name, base, photos, padding)


def test_distractors_fill_the_gallery_and_never_share_an_identity_with_a_probe() -> None:
    probe = fake_set("lfw", {f"p{i:02d}": 4 + i % 5 for i in range(40)})
    # the same folder as distractors (its people never drawn), and another set that shares two names
    same = fake_set("lfw", {f"p{i:02d}": 4 + i % 5 for i in range(40)})
    other = fake_set("chinese", {"p00": 10, "p01": 10, **{f"c{i}": 10 for i in range(20)}}, padding=0.5)
    t = build_kiosk_trial(
        probe, 10, 3, 12, seed=3, probes_per_person=2, stranger_photos=2, distractor_sets=[same, other],
        gallery_templates=100,
    )  # fmt: skip
    probed = set(t.enrolled) | set(t.strangers)
    assert len(t.enrolled) == 10 and len(t.strangers) == 12 and not set(t.enrolled) & set(t.strangers)
    for d in t.distractors:
        set_name, person = d.split(":", 1)
        assert person not in probed, d
        assert t.origin[d] == set_name
    assert sum(len(v) for v in t.enrolment.values()) == t.planned_templates == 100
    assert {p.person for p in t.presences} == probed
    for pr in t.presences:
        if pr.enrolled:
            assert pr.photo not in t.enrolment[pr.person]
    assert sum(1 for p in t.presences if p.enrolled) <= 2 * 10
    again = build_kiosk_trial(
        probe, 10, 3, 12, seed=3, probes_per_person=2, stranger_photos=2, distractor_sets=[same, other],
        gallery_templates=100,
    )  # fmt: skip
    assert again == t
    with pytest.raises(ValueError, match="too few people"):
        build_kiosk_trial(probe, 10, 3, 12, seed=3, distractor_sets=[other], gallery_templates=10_000)
    with pytest.raises(ValueError, match="cannot enrol"):
        build_kiosk_trial(probe, 39, 6, 0, seed=0)


def test_slices_first_puts_the_slice_people_in_the_trial() -> None:
    probe = fake_set("lfw", {f"p{i:03d}": 3 + i % 6 for i in range(200)})
    members = frozenset(f"p{i:03d}" for i in range(0, 40, 2))
    t = build_kiosk_trial(probe, 30, 3, 30, seed=1, first=members)
    inside = (set(t.enrolled) | set(t.strangers)) & members
    assert inside == members
    eligible = [m for m in members if len(probe.photos[m]) > 3]
    assert len(set(t.enrolled) & members) == (len(eligible) + 1) // 2
    plain = build_kiosk_trial(probe, 30, 3, 30, seed=1)
    assert len((set(plain.enrolled) | set(plain.strangers)) & members) < len(members)
    assert distractor_id("rmfrd", "masu") == "rmfrd:masu"


# ------------------------------------------------------------------------------------------ slices, suffixes


def test_slice_files_txt_and_csv(tmp_path: Path) -> None:
    s = parse_slice("# East Asian\nAi_Sugiyama\n\n  Chen_Shui-bian  \n", "east")
    assert s.identities == {"Ai_Sugiyama", "Chen_Shui-bian"}
    c = tmp_path / "old.csv"
    c.write_text("name,birth_year,region\nBud_Selig,1934,North America\nCarlos_Menem,1930,Latin America\n")
    cs = read_slice(c)
    assert cs.name == "old" and cs.identities == {"Bud_Selig", "Carlos_Menem"}
    cut, missing = cs.restrict(["Bud_Selig", "Someone"])
    assert cut.identities == {"Bud_Selig"} and missing == ["Carlos_Menem"]
    bad = tmp_path / "bad.csv"
    bad.write_text("who,year\nA,1\n")
    with pytest.raises(SliceError, match="'name' column"):
        read_slice(bad)
    with pytest.raises(SliceError, match="not found"):
        read_slice(tmp_path / "none.txt")
    with pytest.raises(SliceError, match=r"\.txt"):
        read_slice(tmp_path / "x.json")
    with pytest.raises(SliceError, match="no identities"):
        parse_slice("# nothing\n", "empty")


def test_shared_slices_parse_and_match_lfw() -> None:
    if not (SLICES / "lfw_east_asian.txt").exists() or not LFW.is_dir():
        pytest.skip(f"shared slices not found under {SLICES} (set MEAL_EDGE_SHARED)")
    east, old = slices_for([SLICES / "lfw_east_asian.txt", SLICES / "lfw_elderly.csv"], list_photos(LFW))
    # the shared list has 41 lines, one of which is "SOURCES.md" (a file name, not a person): it is cut out
    assert len(east.identities) == 40 and "SOURCES.md" not in east.identities
    assert len(old.identities) == 125 and "Chen_Shui-bian" in east.identities


def test_eval_reads_every_suffix_opencv_reads(tmp_path: Path) -> None:
    suffixes = readable_suffixes()
    assert {".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".ppm", ".tif", ".webp"} <= suffixes
    person = tmp_path / "faces" / "Ann"
    person.mkdir(parents=True)
    grey = picture()[:, :, 0]
    assert cv2.imwrite(str(person / "a.pgm"), grey)
    assert cv2.imwrite(str(person / "b.bmp"), picture()[:, :, ::-1])
    (person / "notes.txt").write_text("not a photo")
    photos = list_photos(tmp_path / "faces")
    assert [p.name for p in photos["Ann"]] == ["a.pgm", "b.bmp"]
    rgb = load_image(person / "a.pgm")
    assert rgb.shape == (120, 100, 3) and np.array_equal(rgb[:, :, 0], grey)


def test_parse_set_takes_an_optional_padding() -> None:
    assert parse_set("/x/rmfrd_chinese@0.5") == (Path("/x/rmfrd_chinese"), 0.5)
    assert parse_set("/x/lfw") == (Path("/x/lfw"), 0.0)
    with pytest.raises(argparse.ArgumentTypeError):
        parse_set("/x/lfw@wide")


# ------------------------------------------------------------------------------------------ bounds


def test_clopper_pearson_upper_bound() -> None:
    n = 3000
    assert clopper_pearson_upper(0, n) == pytest.approx(1 - 0.05 ** (1 / n))
    assert clopper_pearson_upper(0, n) < 3 / n  # the rule of three is slightly conservative
    assert clopper_pearson_upper(1, 100) == pytest.approx(0.0466, abs=2e-4)
    assert clopper_pearson_upper(5, 5) == 1.0 and clopper_pearson_upper(0, 0) == 1.0
    ups = [clopper_pearson_upper(k, 500) for k in range(6)]
    assert all(b > a for a, b in zip(ups, ups[1:], strict=False))
    assert rate(0, 300)["upper95"] == pytest.approx(1 - 0.05 ** (1 / 300))
    with pytest.raises(ValueError):
        clopper_pearson_upper(4, 3)


# ------------------------------------------------------------------------------------------ real faces


@pytest.mark.slow
def test_small_kiosk_run_on_real_faces_adds_up(tmp_path: Path) -> None:
    """A tiny kiosk-like run (SFace, 6 enrolled, 6 strangers, rmfrd distractors padded): every presence
    gets exactly one outcome, slices are parts of the whole, the gallery holds what was asked."""
    if not LFW.is_dir() or not RMFRD.is_dir():
        pytest.skip(f"shared faces not found under {FACES} (set MEAL_EDGE_SHARED)")
    from edge.lab.encoders import SFaceEncoder
    from edge.lab.kioskcmd import format_kiosk, photo_set
    from edge.lab.kioskeval import Descriptors, report, run_kiosk_trial
    from edge.lab.slices import Slice
    from edge.recognition.decide import default_policy

    people = sorted(list_photos(LFW))
    east = [n for n in (SLICES / "lfw_east_asian.txt").read_text().split() if n in people][:6]
    probe = photo_set(LFW, 0.0)
    probe = PhotoSet(probe.name, probe.root, {n: probe.photos[n] for n in people[:30] + east}, 0.0)
    rm = photo_set(RMFRD, 0.5)
    trial = build_kiosk_trial(
        probe, 6, 3, 6, seed=0, probes_per_person=1, stranger_photos=1, first=frozenset(east),
        distractor_sets=[rm], gallery_templates=30,
    )  # fmt: skip
    enc = SFaceEncoder()
    policy = default_policy(enc.model_id)
    desc = Descriptors(enc, tmp_path)
    run = run_kiosk_trial(trial, {probe.name: probe, rm.name: rm}, probe, desc, policy)
    r = report(run, [Slice("east", frozenset(east), "test")])
    g = r["gallery"]
    assert g["templates"] + g["enrolment_photos_without_face"] == 30
    assert g["distractors"] == len(trial.distractors) and g["distractor_sets"] == {
        "rmfrd_chinese": len(trial.distractors)
    }
    total = r["slices"]["all"]["counts"]
    assert total["genuine"] == 6 and total["impostor"] == 6
    for s in r["slices"].values():
        c = s["counts"]
        assert c["correct"] + c["wrong"] + c["confirm"] + c["rejected"] == c["genuine"]
        assert c["impostor_accept"] + c["impostor_confirm"] + c["impostor_unknown"] == c["impostor"]
        assert s["too_few_faces"]["enrolled"] <= c["rejected"]
        loo = s["leave_one_out"]
        assert loo["trials"] == c["genuine"]
        assert loo["all_stranger_trials_accept"]["n"] == c["genuine"] + c["impostor"]
    east_c = r["slices"]["east"]["counts"]
    assert 0 < east_c["genuine"] + east_c["impostor"] <= total["genuine"] + total["impostor"]
    assert all(len(f) <= 5 for f in run.frames)
    # the frames were cached: a second run computes nothing and decides the same
    again = run_kiosk_trial(trial, {probe.name: probe, rm.name: rm}, probe, Descriptors(enc, tmp_path), policy)
    assert [v.outcome for v in again.verdicts] == [v.outcome for v in run.verdicts]
    r["protocol"] = {"variation": "x", "frames_seed": 0, "max_frames": 5}
    r["model_id"], r["policy_source"] = enc.model_id, policy.source
    text = "\n".join(format_kiosk(r))
    assert "| east |" in text and "| all |" in text


def test_kiosk_calibration_tables_and_the_sequential_rule_on_constructed_presences() -> None:
    """Presences whose frames sit near their own person: the tables hold every presence with k frames, the
    leave-one-out tables never count a probe as enrolled, and the rule's outcomes add up."""
    from edge.lab.kioskcalib import KioskCalibration, kiosk_tables, sequential_rule
    from edge.recognition.decide import default_policy

    rng = np.random.default_rng(5)
    centres = rng.standard_normal((12, 128)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)

    def near(c: np.ndarray, n: int, spread: float) -> np.ndarray:
        x = c + spread * rng.standard_normal((n, 128)).astype(np.float32) / np.sqrt(128)
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    presences = {f"p{i}": [near(c, 5 if i % 2 else 4, 0.15) for _ in range(2)] for i, c in enumerate(centres)}
    enrolable = {f"p{i}": near(c, 4, 0.3) for i, c in enumerate(centres)}
    kc = KioskCalibration("m", presences, enrolable)
    assert kc.n_presences == 24
    tables = kiosk_tables(kc, 3, rounds=2, seed=0, template_weight=0.5)
    assert sorted(tables) == [3, 4, 5]
    g3, i3 = tables[3]
    assert len(g3) == len(i3) == 2 * 24 and g3.genuine.all() and not i3.genuine.any()
    assert len(tables[5][0]) == 2 * 12  # only the people whose presences have 5 frames
    assert g3.best_correct.all() and (i3.distance > g3.distance.max() - 1e-6).mean() > 0.9
    r = sequential_rule(kc, default_policy("m"), 3, rounds=2, seed=0)
    n = r["enrolled_trials"]
    assert n == 48 and r["correct"]["count"] + r["wrong"]["count"] + r["not_accepted"]["count"] == n
    assert r["wrong"]["count"] == 0


def test_home_first_counts_a_visitor_taken_for_a_local_lookalike() -> None:
    """Constructed geometry: A and B are 0.4 apart, everyone else far. Both are accepted correctly at home
    and by the district-wide gallery; visiting a centre that holds the other (and not themselves), each is
    accepted as the other by "home first" (a wrong senior); a far stranger is accepted by nobody. So the
    measurement can show the rule's risk, not just its benefit."""
    from edge.lab.homefirst import home_first
    from edge.lab.kioskeval import KioskRun
    from edge.lab.kiosktrial import KioskTrial, Presence
    from edge.recognition.decide import Policy, decide_sequential
    from edge.recognition.match import Gallery

    rng = np.random.default_rng(1)
    far = rng.standard_normal((4, 128)).astype(np.float32)
    far /= np.linalg.norm(far, axis=1, keepdims=True)
    a = far[0]
    ortho = far[1] - (far[1] @ a) * a
    ortho /= np.linalg.norm(ortho)
    theta = 2 * np.arcsin(0.4 / 2)  # chord 0.4 between unit vectors
    b = (np.cos(theta) * a + np.sin(theta) * ortho).astype(np.float32)
    people = {"A": a, "B": b, "C": far[2], "D": far[3], "E": -a}
    gallery = Gallery.from_pairs(list(people.items()), model_id="t")
    assert gallery.only(["D", "B"]).senior_ids == ("B", "D")
    assert gallery.only(["B", "D"]).n_templates == 2
    policy = Policy(accept_distance=0.6, confirm_distance=0.8, min_margin=0.2, confirm_margin=0.1, model_id="t",
                    lookalike_distance=0.05)
    stranger = rng.standard_normal(128).astype(np.float32)
    stranger /= np.linalg.norm(stranger)
    presences = (Presence("A", True, Path("a.jpg")), Presence("B", True, Path("b.jpg")),
                 Presence("X", False, Path("x.jpg")))
    frames = (np.stack([a] * 3), np.stack([b] * 3), np.stack([stranger] * 3))
    verdicts = tuple(decide_sequential(gallery, f, policy, {}) for f in frames)
    assert [v.outcome if v else None for v in verdicts] == ["accept", "accept", "unknown"]
    trial = KioskTrial({}, {}, ("A", "B"), ("X",), (), presences, 5)
    run = KioskRun(trial, gallery, {}, presences, frames, tuple(v for v in verdicts if v), 0)
    r = home_first(run, policy, home_size=4, seed=0)["scenarios"]
    # a centre of 4 of the 5 people: visiting A's centre is {B, C, D, E}, so B is always there
    assert r["visiting"]["district"] == {"n": 2, "correct": 2, "wrong": 0, "confirm": 0, "unknown": 0}
    # ... and visiting B's centre is {A, C, D, E}: each is taken for the other, 0.4 away
    assert r["visiting"]["home_first"]["wrong"] == 2 and r["visiting"]["home_first"]["correct"] == 0
    assert r["visiting"]["home_only"]["wrong"] == 2
    assert r["at_home"]["home_first"]["correct"] == 2 and r["at_home"]["home_first"]["wrong"] == 0
    assert r["strangers"]["home_first"]["wrong"] == 0 and r["strangers"]["home_first"]["n"] == 1
    with pytest.raises(ValueError, match="home size"):
        home_first(run, policy, home_size=5)
