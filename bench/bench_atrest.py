"""Templates at rest: loading the gallery from sealed templates vs the plaintext templates of before, one run.

    python bench/bench_atrest.py [--seniors 500] [--per 5] [--repeat 5] [--json]

Ours: `Store.templates()` on a store of N seniors x P templates, each sealed with AES-256-GCM
(edge.security.atrest), which is what the daemon does at start and after each enrolment change. The reference:
the same rows read as plaintext float32 blobs, as the store did before (schema version 2), with the same
SQLite query shape and the same numpy conversion. Matching itself is untouched: both give the same arrays
(checked), and the matcher never sees ciphertext. Reports the median of `--repeat` loads and the ratio.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np

from edge.meals.rules import Senior
from edge.store import Store, TemplateIn, migrations


def _sealed_store(path: Path, embs: np.ndarray, per: int) -> Store:
    store = Store(path)
    for i in range(len(embs) // per):
        sid = f"S{i:05d}"
        store.add_senior(Senior(sid, f"senior {i}", date(1940, 1, 1), "xuhui"))
        batch = embs[i * per:(i + 1) * per]
        store.add_templates(sid, [TemplateIn(e, "m1", 0.9, f"{sid}-{k}.jpg") for k, e in enumerate(batch)])
    return store


def _plaintext_db(path: Path, embs: np.ndarray, per: int) -> None:
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=WAL")
    for stmt in migrations._V1:
        con.execute(stmt)
    now = "2026-11-01T00:00:00+00:00"
    for i in range(len(embs) // per):
        sid = f"S{i:05d}"
        con.execute("INSERT INTO seniors VALUES (?, ?, '1940-01-01', 'xuhui', 'active', ?, ?)", (sid, sid, now, now))
        for k, e in enumerate(embs[i * per:(i + 1) * per]):
            con.execute(
                "INSERT INTO face_templates (senior_id, embedding, model_id, quality, source, created_at) "
                "VALUES (?, ?, 'm1', 0.9, ?, ?)",
                (sid, e.astype("<f4").tobytes(), f"{sid}-{k}.jpg", now),
            )
    con.commit()
    con.close()


def _plaintext_load(path: Path) -> list[tuple[str, np.ndarray]]:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = con.execute(
            "SELECT senior_id, id, embedding FROM face_templates WHERE model_id = 'm1' ORDER BY senior_id, id"
        ).fetchall()
    finally:
        con.close()
    return [(sid, np.frombuffer(blob, dtype="<f4").astype(np.float32)) for sid, _, blob in rows]


def _median(fn: object, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seniors", type=int, default=500)
    p.add_argument("--per", type=int, default=5)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    embs = rng.normal(0, 0.1, (args.seniors * args.per, 128)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        store = _sealed_store(Path(tmp) / "sealed.sqlite", embs, args.per)
        _plaintext_db(Path(tmp) / "plain.sqlite", embs, args.per)
        ours, ref = store.templates("m1"), _plaintext_load(Path(tmp) / "plain.sqlite")
        same = [s for s, _ in ours] == [s for s, _ in ref] and all(
            np.array_equal(a, b) for (_, a), (_, b) in zip(ours, ref, strict=True)
        )
        t_ours = _median(lambda: store.templates("m1"), args.repeat)
        t_ref = _median(lambda: _plaintext_load(Path(tmp) / "plain.sqlite"), args.repeat)
        # the decryption alone, of the same sealed rows (the rest is reading the rows)
        con = sqlite3.connect(Path(tmp) / "sealed.sqlite")
        sealed = con.execute("SELECT senior_id, id, embedding FROM face_templates").fetchall()
        con.close()
        t_open = _median(lambda: [store.cipher.open(b, sid, tid) for sid, tid, b in sealed], args.repeat)
        store.close()
    out = {
        "templates": len(embs),
        "sealed_load_ms": round(t_ours * 1000, 1),
        "plaintext_load_ms": round(t_ref * 1000, 1),
        "ratio": round(t_ours / t_ref, 2),
        "decrypt_only_ms": round(t_open * 1000, 1),
        "same_arrays": same,
    }
    if args.json:
        print(json.dumps(out))
    else:
        print(
            f"{out['templates']} templates: sealed load {out['sealed_load_ms']} ms, plaintext load "
            f"{out['plaintext_load_ms']} ms, ratio {out['ratio']}, of which decryption {out['decrypt_only_ms']} ms "
            f"(once per gallery load, never per frame; same arrays: {same})"
        )
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
