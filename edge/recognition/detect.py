"""Face detection, 5-point landmarks and aligned face chips.

Boxes are in full-frame pixel coordinates in face_recognition's order: (top, right, bottom, left).
Detection runs dlib's HOG detector on a frame downscaled to at most `detect_width` pixels wide
(HOG time grows with the pixel count: about 10 ms at 427x240, 40 ms at 853x480 on our 2 cores);
landmarks and chips are taken from the full-resolution frame so the descriptor sees every pixel.

Any detector with `detect(rgb) -> list[Face]` fits the pipeline (`FaceDetector`); YuNet
(edge.recognition.yunet) is the other one. A Face names its landmark scheme, because each embedder
makes its own chips from them (edge.recognition.embed.base.Embedder.chips): dlib's chip needs dlib's
5 points, which `dlib_chips` computes in the box of a face another detector found.
"""

from __future__ import annotations

import functools
import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import dlib
import numpy as np

from edge.modelbuild.modelfiles import SHAPE_PREDICTOR_5_DAT
from edge.recognition.embed.base import CHIP_PADDING, CHIP_SIZE
from edge.security.guards import MAX_PIXELS as MAX_PHOTO_PIXELS
from edge.security.guards import ImageTooLarge, UnknownImage, check_pixels

log = logging.getLogger(__name__)


class ImageError(ValueError):
    """A photo that cannot be used, with a reason a member of staff can act on."""


@dataclass(frozen=True)
class Face:
    #: (top, right, bottom, left) in full-frame pixels
    box: tuple[int, int, int, int]
    #: float32 [5, 2] (x, y): dlib's 5-point model: right eye outer/inner, left eye outer/inner, nose base
    landmarks: np.ndarray
    #: detector confidence (higher is more face-like): HOG's margin, or YuNet's score in 0..1
    score: float
    #: which 5 points `landmarks` holds: "dlib5" (above) or "yunet5" (right eye, left eye, nose tip, right
    #: and left mouth corner, image-left first: the ArcFace template's points)
    scheme: str = "dlib5"

    @property
    def width(self) -> int:
        return self.box[1] - self.box[3]

    @property
    def height(self) -> int:
        return self.box[2] - self.box[0]

    @property
    def yaw(self) -> float:
        """How far the face is turned sideways: the nose's offset from the eyes' midpoint, in eye spans, from
        this face's own 5 points (0 facing the camera). dlib5 (eye corners, nose base): 0.05 for the median LFW
        photo, 0.24 at their 99th percentile; its shape pulls towards a frontal face, so it under-reads a turn
        (a clear three-quarter view reads 0.3-0.4). yunet5 (eye centres, nose tip): 0.09 median, 0.46 at the
        99th percentile; a profile reads above 1 (see TURNED_YAW)."""
        lm = self.landmarks
        if self.scheme == "yunet5":  # eye centres 0, 1; nose tip 2
            mid, nose_x, span = float(lm[:2, 0].mean()), float(lm[2, 0]), abs(float(lm[0, 0]) - float(lm[1, 0]))
        else:  # eye corners 0-1, 2-3 (the span between the outer ones); nose base 4
            mid, nose_x, span = float(lm[:4, 0].mean()), float(lm[4, 0]), abs(float(lm[0, 0]) - float(lm[2, 0]))
        if span < 1e-6:
            return 1.0
        return abs(nose_x - mid) / span

    @property
    def turned(self) -> bool:
        """Turned too far to be asked nothing: the kiosk asks the person to face the screen."""
        return self.yaw > (TURNED_YAW_YUNET if self.scheme == "yunet5" else TURNED_YAW)


#: a face turned further than this (Face.yaw) is asked to face the screen. Faces of 2,000 random LFW photos
#: (whole faces wider than 70 px, detect_width 640): median 0.05, 99th percentile 0.24, 99.5th 0.28; those
#: above 0.3 were clear three-quarter views. Chosen so that a senior who does face the camera is not nagged.
TURNED_YAW = 0.3
#: the same for YuNet's own points (Face.scheme "yunet5"), which read a turn more fully: on 1,996 random LFW
#: photos (faces wider than 70 px, detect_width 640) median 0.09, 99th percentile 0.46, 99.5th 0.52, 99.9th 0.87;
#: the three-quarter view of tests/test_hints.py reads 1.18, the pianist's profile on the stage clip 1.1-1.4
TURNED_YAW_YUNET = 0.55


#: every file suffix OpenCV's imread documents (cv::imread: bmp dib jpeg jpg jpe jp2 png webp avif pbm pgm ppm
#: pxm pnm pfm sr ras tiff tif exr hdr pic gif); which of them this build reads is checked at run time
OPENCV_SUFFIXES = (
    ".bmp", ".dib", ".jpeg", ".jpg", ".jpe", ".jp2", ".png", ".webp", ".avif", ".pbm", ".pgm", ".ppm", ".pxm",
    ".pnm", ".pfm", ".sr", ".ras", ".tiff", ".tif", ".exr", ".hdr", ".pic", ".gif",
)  # fmt: skip


@functools.cache
def readable_suffixes() -> frozenset[str]:
    """The photo suffixes this OpenCV build decodes: each documented suffix whose codec round-trips a small
    image (cv2.haveImageReader needs an existing file; encoding one in memory asks the same codec table).
    A suffix whose codec is not built in (or cannot be tried this way) is left out: such a photo would be
    refused by load_image anyway, so skipping it in a folder listing loses nothing usable."""
    colour = np.zeros((64, 64, 3), np.uint8)
    colour[16:48, 16:48] = 200
    # some writers take only grey (pbm/pgm) or float (exr) pictures
    probes = (colour, colour[:, :, 0].copy(), colour.astype(np.float32) / 255)
    out = set()
    quiet = getattr(getattr(cv2, "utils", None), "logging", None)
    level = quiet.getLogLevel() if quiet else None
    if quiet:
        quiet.setLogLevel(quiet.LOG_LEVEL_SILENT)
    try:
        for suffix in OPENCV_SUFFIXES:
            for probe in probes:
                try:
                    ok, buf = cv2.imencode(suffix, probe)
                except cv2.error:
                    ok = False
                if ok and cv2.imdecode(buf, cv2.IMREAD_UNCHANGED) is not None:
                    out.add(suffix)
                    break
    finally:
        if quiet and level is not None:
            quiet.setLogLevel(level)
    return frozenset(out)


def _is_truncated(data: bytes) -> bool:
    """Tell an incomplete file (interrupted copy) from a corrupt one, so staff know to copy it again.
    Depending on version and format, OpenCV either fails or decodes the missing part as grey;
    Pillow refuses incomplete files. Formats Pillow does not know are left to OpenCV."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
    except UnidentifiedImageError:
        return False
    except (OSError, SyntaxError, ValueError) as e:
        log.debug("pillow refuses the photo: %s", e)
        return True
    return False


def decode_image(data: bytes, label: str) -> np.ndarray:
    """Encoded photo -> uint8 RGB, upright. ImageError with a reason staff can act on."""
    if not data:
        raise ImageError(f"{label}: file is empty: copy the photo again")
    # The size from the header, before any decoding: a small file can announce a huge picture (a 1 MB PNG
    # of 20000x20000 would take 1.2 GB to decode). A format Pillow cannot identify cannot be sized first,
    # so it is not decoded at all.
    try:
        check_pixels(data, label, MAX_PHOTO_PIXELS)
    except ImageTooLarge as e:
        raise ImageError(str(e)) from None
    except UnknownImage:
        raise ImageError(
            f"{label}: not a readable image (corrupt, or a format such as HEIC or PDF): save it as JPEG or PNG"
        ) from None
    # IMREAD_COLOR applies the EXIF orientation: phone photos taken upright are often stored sideways.
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if _is_truncated(data):
        raise ImageError(f"{label}: the photo file is incomplete (truncated): copy it again from the camera")
    if bgr is None:
        raise ImageError(
            f"{label}: not a readable image (corrupt, or a format such as HEIC or PDF): "
            "save it as JPEG or PNG"
        )
    return to_rgb(bgr, bgr=True)


def read_image(src: str | Path) -> tuple[np.ndarray, bytes]:
    p = Path(src)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise ImageError(f"{p.name}: file not found ({p}): check the file name and folder") from None
    except IsADirectoryError:
        raise ImageError(f"{p.name}: is a folder, not a photo ({p})") from None
    except OSError as e:
        raise ImageError(f"{p.name}: cannot read {p} ({e.strerror})") from None
    return decode_image(data, p.name), data


def load_image(path: str | Path) -> np.ndarray:
    """Read a photo as uint8 RGB [h, w, 3], upright; a clear ImageError when it cannot be used."""
    return read_image(path)[0]


def to_rgb(img: np.ndarray, *, bgr: bool) -> np.ndarray:
    """Any 8/16-bit grey, BGR(A) or RGB(A) array -> uint8 RGB."""
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise ImageError(f"unsupported pixel type {img.dtype}")
    if img.ndim == 2:
        return np.ascontiguousarray(np.repeat(img[:, :, None], 3, axis=2))
    if img.ndim != 3 or img.shape[2] not in (3, 4):
        raise ImageError(f"unsupported image shape {img.shape}")
    img = img[:, :, :3]
    if bgr:
        img = img[:, :, ::-1]
    return np.ascontiguousarray(img)


def _shape_to_array(shape: dlib.full_object_detection) -> np.ndarray:
    return np.array([(shape.part(i).x, shape.part(i).y) for i in range(shape.num_parts)], dtype=np.float32)


class FaceDetector(Protocol):
    def detect(self, rgb: np.ndarray) -> list[Face]:
        """Faces in full-frame pixels, largest first."""
        ...


class Detector:
    """HOG face detector on a downscaled frame + dlib's 5-point shape predictor on the full frame."""

    def __init__(self, detect_width: int = 640, upsample: int = 0, min_score: float = 0.0) -> None:
        self.detect_width = detect_width
        self.upsample = upsample
        self.min_score = min_score
        self._hog = dlib.get_frontal_face_detector()
        self._sp = dlib.shape_predictor(str(SHAPE_PREDICTOR_5_DAT))

    def detect(self, rgb: np.ndarray) -> list[Face]:
        h, w = rgb.shape[:2]
        scale = 1.0
        small = rgb
        if self.detect_width and w > self.detect_width:
            scale = self.detect_width / w
            small = cv2.resize(rgb, (self.detect_width, max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        rects, scores, _ = self._hog.run(small, self.upsample, self.min_score)
        faces = []
        for r, s in zip(rects, scores, strict=True):
            left = max(0, round(r.left() / scale))
            top = max(0, round(r.top() / scale))
            right = min(w, round((r.right() + 1) / scale))
            bottom = min(h, round((r.bottom() + 1) / scale))
            if right <= left or bottom <= top:
                continue
            shape = self._sp(rgb, dlib.rectangle(left, top, right, bottom))
            faces.append(Face((top, right, bottom, left), _shape_to_array(shape), float(s)))
        faces.sort(key=lambda f: f.width * f.height, reverse=True)
        return faces

    def chips(self, rgb: np.ndarray, faces: list[Face]) -> np.ndarray:
        """Aligned uint8 [n,150,150,3] chips, exactly as dlib's compute_face_descriptor aligns them."""
        return dlib_chips(rgb, faces, self._sp)


_SP5: list[dlib.shape_predictor] = []


def _shape_predictor() -> dlib.shape_predictor:
    if not _SP5:
        _SP5.append(dlib.shape_predictor(str(SHAPE_PREDICTOR_5_DAT)))
    return _SP5[0]


def with_dlib5(rgb: np.ndarray, face: Face, sp: dlib.shape_predictor | None = None) -> Face:
    """The face with dlib's 5 points, found by shape_predictor_5 in its box if another detector found it."""
    if face.scheme == "dlib5":
        return face
    top, right, bottom, left = face.box
    shape = (sp or _shape_predictor())(np.ascontiguousarray(rgb), dlib.rectangle(left, top, right, bottom))
    return Face(face.box, _shape_to_array(shape), face.score, "dlib5")


def dlib_chips(rgb: np.ndarray, faces: list[Face], sp: dlib.shape_predictor | None = None) -> np.ndarray:
    """Aligned uint8 [n,150,150,3] chips as dlib's compute_face_descriptor aligns them, from any detector's faces."""
    out = np.empty((len(faces), CHIP_SIZE, CHIP_SIZE, 3), np.uint8)
    for i, f in enumerate(faces):
        out[i] = face_chip(rgb, with_dlib5(rgb, f, sp))
    return out


def _full_object_detection(face: Face) -> dlib.full_object_detection:
    top, right, bottom, left = face.box
    pts = [dlib.point(int(round(x)), int(round(y))) for x, y in face.landmarks]
    return dlib.full_object_detection(dlib.rectangle(left, top, right, bottom), pts)


def face_chip(rgb: np.ndarray, face: Face) -> np.ndarray:
    # dlib's binding refuses non-contiguous arrays (e.g. a cropped slice of a frame)
    rgb = np.ascontiguousarray(rgb)
    return np.asarray(
        dlib.get_face_chip(rgb, _full_object_detection(face), size=CHIP_SIZE, padding=CHIP_PADDING),
        dtype=np.uint8,
    )
