"""Rendering presentation attacks: a photo printed on paper (flat or bent) or shown on a phone, held by a
smooth hand-held 3D trajectory in front of a pinhole camera, and re-captured (defocus, sensor noise, JPEG)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from edge.recognition.detect import to_rgb

FRAME_W = 640
FRAME_H = 360
FOCAL = 560.0  # px; about a 60 degree horizontal field of view, a typical USB kiosk camera


def _rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Radians; object-to-camera rotation (yaw about y, pitch about x, roll about z)."""
    cy, sy = math.cos(yaw), math.sin(yaw)
    cx, sx = math.cos(pitch), math.sin(pitch)
    cz, sz = math.cos(roll), math.sin(roll)
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ rx @ ry


@dataclass(frozen=True)
class Pose:
    rot: np.ndarray  # 3x3 object -> camera
    t: np.ndarray  # object centre in camera coordinates (texture-pixel units)
    bend: float  # surface depth z = bend * x^2 (object coordinates, texture px); 0 = flat


def project(points_uv: np.ndarray, pose: Pose, tex_wh: tuple[int, int]) -> np.ndarray:
    """Texture pixel coordinates (u, v) -> frame pixel coordinates (x, y)."""
    w, h = tex_wh
    x = points_uv[:, 0] - w / 2
    y = points_uv[:, 1] - h / 2
    z = pose.bend * x * x
    cam = pose.rot @ np.stack([x, y, z]) + pose.t[:, None]
    return np.stack([FOCAL * cam[0] / cam[2] + FRAME_W / 2, FOCAL * cam[1] / cam[2] + FRAME_H / 2], axis=1)


def render_object(
    background: np.ndarray, texture: np.ndarray, pose: Pose, alpha: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Ray-cast the (bent) textured rectangle into the frame. Returns (frame float32 RGB, coverage mask)."""
    th, tw = texture.shape[:2]
    corners = np.array([[0, 0], [tw, 0], [tw, th], [0, th], [tw / 2, 0], [tw / 2, th]], np.float64)
    pc = project(corners, pose, (tw, th))
    x0 = int(max(0, math.floor(pc[:, 0].min()) - 2))
    x1 = int(min(FRAME_W, math.ceil(pc[:, 0].max()) + 3))
    y0 = int(max(0, math.floor(pc[:, 1].min()) - 2))
    y1 = int(min(FRAME_H, math.ceil(pc[:, 1].max()) + 3))
    out = background.astype(np.float32).copy()
    mask = np.zeros((FRAME_H, FRAME_W), np.float32)
    if x1 <= x0 or y1 <= y0:
        return out, mask
    xs, ys = np.meshgrid(np.arange(x0, x1, dtype=np.float64), np.arange(y0, y1, dtype=np.float64))
    d = np.stack([(xs - FRAME_W / 2) / FOCAL, (ys - FRAME_H / 2) / FOCAL, np.ones_like(xs)])
    rt = pose.rot.T
    a = np.einsum("ij,jhw->ihw", rt, d)
    b = rt @ pose.t
    k = pose.bend
    # ray point t*d in object coordinates is t*a - b; the surface is z = k x^2
    if abs(k) < 1e-12:
        tt = b[2] / a[2]
    else:
        qa = k * a[0] ** 2
        qb = -(2 * k * a[0] * b[0] + a[2])
        qc = k * b[0] ** 2 + b[2]
        disc = np.maximum(qb * qb - 4 * qa * qc, 0.0)
        sq = np.sqrt(disc)
        with np.errstate(divide="ignore", invalid="ignore"):
            r1 = (-qb - sq) / (2 * qa)
            r2 = (-qb + sq) / (2 * qa)
        r1 = np.where(r1 > 0, r1, np.inf)
        r2 = np.where(r2 > 0, r2, np.inf)
        tt = np.minimum(r1, r2)
        tt = np.where(np.isfinite(tt), tt, b[2] / a[2])
    u = (tt * a[0] - b[0] + tw / 2).astype(np.float32)
    v = (tt * a[1] - b[1] + th / 2).astype(np.float32)
    inside = ((u >= 0) & (u <= tw - 1) & (v >= 0) & (v <= th - 1)).astype(np.float32)
    # anti-alias the silhouette a little: the object's edge is not a razor cut in a real capture
    inside = cv2.GaussianBlur(inside, (3, 3), 0.6)
    sampled = cv2.remap(texture.astype(np.float32), u, v, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    if alpha is not None:
        inside = inside * cv2.remap(alpha.astype(np.float32), u, v, cv2.INTER_LINEAR, borderValue=0.0)
    roi = out[y0:y1, x0:x1]
    out[y0:y1, x0:x1] = roi * (1 - inside[..., None]) + sampled * inside[..., None]
    mask[y0:y1, x0:x1] = inside
    return out, mask


def _smooth_signal(rng: np.random.Generator, n: int, amp: float, tremor: float) -> np.ndarray:
    """A slow drift (two random sinusoids) plus low-pass filtered tremor, n samples at ~30 fps."""
    t = np.arange(n) / 30.0
    s = np.zeros(n)
    for _ in range(2):
        f = rng.uniform(0.15, 0.9)
        s += amp * rng.uniform(0.3, 1.0) * np.sin(2 * math.pi * f * t + rng.uniform(0, 2 * math.pi))
    tr = rng.normal(0, tremor, n + 6)
    tr = np.convolve(tr, np.ones(4) / 4, mode="same")[3 : 3 + n]
    return s + tr


def trajectory(
    rng: np.random.Generator,
    n: int,
    tex_wh: tuple[int, int],
    face_uv: np.ndarray,
    face_w_tex: float,
    *,
    bend: float = 0.0,
    bend_var: float = 0.0,
    still: bool = False,
) -> list[Pose]:
    """Poses so that the photo's face is 85-160 px wide near the frame centre, moving like a held object."""
    target_px = rng.uniform(85, 160)
    z0 = FOCAL * face_w_tex / target_px
    w, h = tex_wh
    # where the face centre should land, as an offset of the object centre
    fx, fy = face_uv[0] - w / 2, face_uv[1] - h / 2
    yaw0, pitch0, roll0 = rng.normal(0, math.radians(8), 3)
    k = 0.0 if still else 1.0
    yaw = yaw0 + k * _smooth_signal(rng, n, math.radians(rng.uniform(2, 9)), math.radians(0.4))
    pitch = pitch0 + k * _smooth_signal(rng, n, math.radians(rng.uniform(2, 9)), math.radians(0.4))
    roll = roll0 + k * _smooth_signal(rng, n, math.radians(rng.uniform(1, 5)), math.radians(0.3))
    face_x = rng.uniform(-80, 80) + k * _smooth_signal(rng, n, rng.uniform(4, 25), 0.8)
    face_y = rng.uniform(-40, 30) + k * _smooth_signal(rng, n, rng.uniform(3, 15), 0.8)
    zz = z0 * (1 + k * _smooth_signal(rng, n, rng.uniform(0.02, 0.12), 0.003))
    bends = bend + bend_var * _smooth_signal(rng, n, 1.0, 0.05) if bend else np.zeros(n)
    poses = []
    for i in range(n):
        rot = _rotation(yaw[i], pitch[i], roll[i])
        # place the object so that its face point projects at the wanted image position
        face_cam_dir = np.array([face_x[i] / FOCAL, face_y[i] / FOCAL, 1.0]) * zz[i]
        t = face_cam_dir - rot @ np.array([fx, fy, bends[i] * fx * fx])
        poses.append(Pose(rot, t, float(bends[i])))
    return poses


def paper_texture(rng: np.random.Generator, photo: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A photo printed on white paper: reduced contrast and saturation, ink blur, paper grain, a margin."""
    img = cv2.resize(photo, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC).astype(np.float32)
    grey = img.mean(axis=2, keepdims=True)
    img = grey + (img - grey) * rng.uniform(0.6, 0.9)  # inks cover a smaller gamut
    img = 255 * (img / 255) ** rng.uniform(0.9, 1.25)
    img = img * rng.uniform(0.7, 0.85) + rng.uniform(15, 35)  # paper white is not emissive, ink black is grey
    img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.8, 1.8))
    m = int(rng.uniform(0.0, 0.25) * img.shape[1])
    h, w = img.shape[:2]
    paper = np.full((h + 2 * m, w + 2 * m, 3), rng.uniform(225, 245), np.float32)
    paper[m : m + h, m : m + w] = img
    grain = cv2.GaussianBlur(rng.normal(0, 1, paper.shape[:2]).astype(np.float32), (0, 0), 1.2)
    paper += (grain * rng.uniform(3, 8))[..., None]
    return np.clip(paper, 0, 255), np.array([m + w / 2, m + h / 2])


def phone_texture(rng: np.random.Generator, content: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A phone showing `content`: dark bezel, gamma/colour shift, an RGB sub-pixel grid that aliases (moire).

    Returns (texture, alpha, centre of the content in texture coordinates)."""
    ch, cw = content.shape[:2]
    sub = 3  # every content pixel becomes 3x3 texture texels: R, G, B stripes with dark gaps
    scr = (255 * (content.astype(np.float32) / 255) ** rng.uniform(0.75, 1.0)).astype(np.float32)
    tint = np.array([rng.uniform(0.9, 1.0), rng.uniform(0.95, 1.02), rng.uniform(1.0, 1.15)], np.float32)
    scr = np.clip(scr * tint * rng.uniform(1.0, 1.15), 0, 255)
    big = np.repeat(np.repeat(scr, sub, axis=0), sub, axis=1)
    # sub-pixel stripes (weak colour, most light leaks to the neighbours) and dark gaps between pixel rows
    chroma = rng.uniform(0.05, 0.25)
    stripes = np.full((sub, sub, 3), 1 - chroma, np.float32)
    for c in range(3):
        stripes[:, c, c] += 3 * chroma
    stripes[sub - 1, :, :] *= 1 - rng.uniform(0.15, 0.4)
    stripes /= stripes.mean()
    big = big * np.tile(stripes, (ch, cw, 1))
    # the camera lens does not resolve single sub-pixels: most of the grid is averaged out, some aliases (moire)
    big = cv2.GaussianBlur(big, (0, 0), rng.uniform(0.7, 1.2))
    bez = int(rng.uniform(0.04, 0.09) * big.shape[1])
    top = int(rng.uniform(0.05, 0.25) * big.shape[0])
    h, w = big.shape[0] + 2 * top, big.shape[1] + 2 * bez
    tex = np.full((h, w, 3), rng.uniform(8, 30), np.float32)
    tex[top : top + big.shape[0], bez : bez + big.shape[1]] = big
    alpha = np.ones((h, w), np.float32)
    r = int(0.08 * w)  # rounded corners
    for cy, cx in ((r, r), (r, w - r - 1), (h - r - 1, r), (h - r - 1, w - r - 1)):
        yy, xx = np.ogrid[:h, :w]
        corner = ((yy < r) if cy == r else (yy > h - r - 1)) & ((xx < r) if cx == r else (xx > w - r - 1))
        alpha[corner & ((yy - cy) ** 2 + (xx - cx) ** 2 > r * r)] = 0
    return np.clip(tex, 0, 255), alpha, np.array([bez + big.shape[1] / 2, top + big.shape[0] / 2])


def capture(rng: np.random.Generator, frame: np.ndarray, blur: float, noise: float, q: int) -> bytes:
    """The kiosk camera: defocus, sensor noise, JPEG. Returns the JPEG bytes (the cached frame)."""
    f = cv2.GaussianBlur(frame, (0, 0), blur) if blur > 0.05 else frame
    f = f + rng.normal(0, noise, f.shape).astype(np.float32)
    bgr = np.clip(f, 0, 255).astype(np.uint8)[:, :, ::-1]
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, q])
    assert ok
    return buf.tobytes()


def decode(jpeg: bytes) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError("cached frame is not a readable JPEG (delete the liveness cache)")
    return to_rgb(np.asarray(img), bgr=True)
