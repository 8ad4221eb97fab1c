"""Mirrored descriptors (edge/recognition/embed/mirror.py) and what happens when the store holds another
model's templates."""

from __future__ import annotations

import logging
import os
from datetime import date
from pathlib import Path

import numpy as np
import pytest

from edge.meals.rules import Senior
from edge.modelbuild.modelfiles import model_id_for
from edge.recognition.decide import tolerance_policy
from edge.recognition.detect import Detector, load_image
from edge.recognition.embed.factory import make_embedder
from edge.recognition.embed.mirror import MIRROR_SUFFIX, Mirrored, mirrored_model_id
from edge.recognition.enrolled import GalleryHolder
from edge.store import Store, TemplateIn

SHARED = Path(os.environ.get("MEAL_EDGE_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
SAMPLES = SHARED / "data" / "samples"


@pytest.fixture(scope="module")
def chips() -> np.ndarray:
    if not (SAMPLES / "obama-480p.jpg").exists():
        pytest.skip(f"{SAMPLES}: face_recognition's sample photos not found (set MEAL_EDGE_SHARED)")
    det = Detector()
    out = []
    for name in ("obama-480p.jpg", "biden.jpg"):
        rgb = load_image(SAMPLES / name)
        out.append(det.chips(rgb, det.detect(rgb)[:1])[0])
    return np.stack(out)


def test_mirrored_descriptor_is_the_mean_of_the_face_and_its_mirror(chips: np.ndarray) -> None:
    plain = make_embedder("onnx", mirror=False)
    mirrored = make_embedder("onnx", mirror=True)
    assert isinstance(mirrored, Mirrored)
    assert mirrored.model_id == plain.model_id + MIRROR_SUFFIX == mirrored_model_id(model_id_for())
    got = mirrored.embed(chips)
    want = (plain.embed(chips) + plain.embed(chips[:, :, ::-1].copy())) / 2
    np.testing.assert_allclose(got, want, atol=1e-5)
    # a face is nearer its own mirror than another person: the average stays that person's descriptor
    assert np.linalg.norm(got[0] - plain.embed(chips[:1])[0]) < 0.2 < np.linalg.norm(got[0] - got[1])
    assert mirrored.embed(np.zeros((0, 150, 150, 3), np.uint8)).shape == (0, 128)
    with pytest.raises(ValueError, match="already mirrored"):
        Mirrored(mirrored)


def test_kiosk_says_which_seniors_it_cannot_recognise_after_a_model_change(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Templates are keyed by model_id: a kiosk switched to mirrored descriptors must not silently
    turn away everyone enrolled with plain ones."""
    plain, mirrored = model_id_for(), mirrored_model_id(model_id_for())
    rng = np.random.default_rng(0)
    with Store(tmp_path / "s.sqlite") as store:
        for sid in ("S1", "S2", "S3"):
            store.add_senior(Senior(sid, f"Senior {sid}", date(1950, 1, 1), "xuhui", "active"))  # type: ignore[arg-type]
        for sid in ("S1", "S2"):
            store.add_templates(sid, [TemplateIn(rng.normal(size=128).astype(np.float32), plain, 1.0, "photo")])
        store.add_templates("S3", [TemplateIn(rng.normal(size=128).astype(np.float32), mirrored, 1.0, "photo")])
        assert store.seniors_only_in_other_models(mirrored) == {plain: 2}
        assert store.seniors_only_in_other_models(plain) == {mirrored: 1}

        with caplog.at_level(logging.ERROR, logger="edge.recognition.enrolled"):
            holder = GalleryHolder(store, tolerance_policy(mirrored))
        assert list(holder.current.gallery.senior_ids) == ["S3"]
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1 and "2 seniors" in errors[0] and plain in errors[0] and "Re-enrol" in errors[0]

        # re-enrolled with the kiosk's model: recognised, and the error stops
        for sid in ("S1", "S2"):
            store.add_templates(sid, [TemplateIn(rng.normal(size=128).astype(np.float32), mirrored, 1.0, "photo")])
        caplog.clear()
        with caplog.at_level(logging.ERROR, logger="edge.recognition.enrolled"):
            holder.reload()
        assert sorted(holder.current.gallery.senior_ids) == ["S1", "S2", "S3"]
        assert not [r for r in caplog.records if r.levelno == logging.ERROR]
