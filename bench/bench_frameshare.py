"""What lending the camera to the staff screen's enrolment page costs the daemon (edge/recognition/frameshare.py).

    MEAL_EDGE_SHARED=/work/shared .venv/bin/python bench/bench_frameshare.py

Side by side, on frames of the Hamilton clip (640x360): the daemon's own work on one frame (face detection with the
kiosk's configured detector, the reference) against FrameShareWriter.offer() with no request (what every frame
pays all day: one small file read every 0.25 s) and while a capture is requested (JPEG encode + write + rename,
at most every 0.25 s). Ratios are per frame looked at, and per second of a 25 fps camera.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from common import SHARED, machine, median_ms, need

from edge.config import load_config
from edge.paths import default_config_text
from edge.recognition import frameshare
from edge.recognition.capture import VideoFileSource
from edge.recognition.detectors import make_detector


def main() -> None:
    clip = need(SHARED / "data/video/short_hamilton_clip.mp4", "the Hamilton clip")
    frames = [f.image for _, f in zip(range(60), VideoFileSource(clip).frames(), strict=False)]
    img = frames[40]
    with tempfile.TemporaryDirectory() as tmp:
        cfgp = Path(tmp) / "c.toml"
        cfgp.write_text(default_config_text())
        d = load_config(cfgp).detect
        det = make_detector(d.detector, d.detect_width, d.upsample)
        detect = median_ms(lambda: det.detect(img), 20)
        folder = Path(tmp)
        idle = frameshare.FrameShareWriter(folder, every=0.0)
        idle_ms = median_ms(lambda: idle.offer(img), 200)
        sharing = frameshare.FrameShareWriter(folder, every=0.0)
        frameshare.request(folder)
        share_ms = median_ms(lambda: sharing.offer(img), 50)
        read_ms = median_ms(lambda: frameshare.latest(folder).rgb(), 50)  # type: ignore[union-attr]
        sharing.close()
    per_s_idle = idle_ms * 4  # at most 4 looks a second (EVERY_S 0.25)
    per_s_share = share_ms * 4
    print(machine())
    print(f"reference: detect one 640x360 frame ({d.detector})     {detect:8.3f} ms")
    print(f"offer, no request (one request-file read)              {idle_ms:8.3f} ms  "
          f"= {idle_ms / detect:.4f} x detect; {per_s_idle:.2f} ms CPU per second ({per_s_idle / 10:.3f}% of a core)")
    print(f"offer while requested (JPEG q90 + write + rename)      {share_ms:8.3f} ms  "
          f"= {share_ms / detect:.3f} x detect; {per_s_share:.2f} ms CPU per second "
          f"({per_s_share / 10:.2f}% of a core)")
    print(f"staff screen: read + decode one shared picture         {read_ms:8.3f} ms")


if __name__ == "__main__":
    main()
