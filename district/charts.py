"""The settlement's charts as PNG bytes (matplotlib, Agg), identical on every run for the same settlement."""

from __future__ import annotations

import io
from datetime import date, timedelta
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from district.queries import month_range  # noqa: E402
from district.settle import CHECK_INS  # noqa: E402

if TYPE_CHECKING:
    from district.settle import Settlement


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    # no Software/date text chunks: the bytes depend only on the data
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def meals_per_day(s: Settlement) -> bytes:
    first, end = month_range(s.month)
    days = [first + timedelta(d) for d in range((end - first).days)]
    centres = [c["centre_id"] for c in s.centres]
    empty: dict[date, int] = {}
    grid = np.array([[s.per_day.get(c, empty).get(d, 0) for d in days] for c in centres] or [[0] * len(days)])
    fig, ax = plt.subplots(figsize=(11, max(3.0, 0.22 * len(centres) + 1.5)))
    im = ax.imshow(grid, aspect="auto", cmap="viridis", interpolation="nearest")
    ax.set_xticks(range(len(days)), [str(d.day) for d in days], fontsize=7)
    ax.set_yticks(range(len(centres)), centres, fontsize=7)
    ax.set_xlabel(f"day of {s.month}")
    ax.set_title(f"Meals per day per centre, district {s.district}, {s.month}")
    fig.colorbar(im, ax=ax, label="meals")
    fig.tight_layout()
    return _png(fig)


def subsidy_per_centre(s: Settlement) -> bytes:
    centres = [c["centre_id"] for c in s.centres]
    y = np.arange(len(centres))
    fig, ax = plt.subplots(figsize=(9, max(3.0, 0.25 * len(centres) + 1.5)))
    ax.barh(y, [c["subsidy_fen"] / 100 for c in s.centres], color="#9ecae1", label="granted by the kiosks")
    ax.barh(y, [c["net_subsidy_fen"] / 100 for c in s.centres], height=0.45, color="#08519c", label="net payable")
    ax.set_yticks(y, centres, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("CNY")
    ax.set_title(f"Subsidy per centre, {s.month} (net of {s.totals['adjustments']} adjustments)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return _png(fig)


def check_in_method(s: Settlement) -> bytes:
    labels = list(CHECK_INS) + sorted(set(s.check_in) - set(CHECK_INS))
    values = [s.check_in.get(k, 0) for k in labels]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    bars = ax.bar(labels, values, color=["#31a354", "#fd8d3c", "#de2d26", "#999999"][: len(labels)])
    total = sum(values) or 1
    for b, v in zip(bars, values, strict=True):
        ax.annotate(f"{v} ({100 * v / total:.1f}%)", (b.get_x() + b.get_width() / 2, b.get_height()),
                    ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("meals")
    ax.set_title(f"Check-in method, {s.month}")
    fig.tight_layout()
    return _png(fig)


def render(s: Settlement) -> dict[str, bytes]:
    return {"meals-per-day.png": meals_per_day(s), "subsidy-per-centre.png": subsidy_per_centre(s),
            "check-in-method.png": check_in_method(s)}
