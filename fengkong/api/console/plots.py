"""Server-rendered SVG plots (matplotlib, already a dependency): no chart library is
shipped to the browser. Each function returns an ``<svg>`` element to inline."""

from __future__ import annotations

import io
import threading
import warnings
from datetime import datetime
from contextlib import contextmanager
from typing import Any, Iterator, Mapping, Sequence

#: colours per outcome, the same on every page (and in console.css)
COLOURS = {"allow": "#4c9a6a", "challenge": "#e0b341", "review": "#e07b39", "deny": "#c0392b"}
_LOCK = threading.Lock()  # pyplot's state is global: one figure at a time


@contextmanager
def _quiet() -> Iterator[None]:
    """One figure at a time (pyplot's state is global), without matplotlib's warnings about
    CJK glyphs its own font lacks (the SVG keeps text as text: the browser draws it)."""
    with _LOCK, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")
        yield


def _svg(fig: object) -> str:
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    # text stays text (not glyph paths): smaller, selectable, and drawn in the page's fonts
    # (so a Chinese label is drawn by the browser's CJK font; matplotlib's own font only
    # measures it, and its "glyph missing" warning says nothing about the result: `_quiet`)
    with plt.rc_context({"svg.fonttype": "none"}):
        fig.savefig(buf, format="svg", bbox_inches="tight")  # type: ignore[attr-defined]
    plt.close(fig)  # type: ignore[arg-type]
    text = buf.getvalue()
    return text[text.index("<svg"):]


def decisions_per_minute(starts_ms: Sequence[int], counts: Mapping[str, Sequence[int]], title: str) -> str:
    """Stacked bars: decisions per minute by outcome."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with _quiet():
        fig, ax = plt.subplots(figsize=(9, 2.8))
        x: Any = [datetime.fromtimestamp(s / 1000) for s in starts_ms]
        bottom = [0] * len(x)
        for outcome, colour in COLOURS.items():
            values = list(counts.get(outcome, [0] * len(x)))
            ax.bar(x, values, width=1 / 1440 * 0.9, bottom=bottom, color=colour, label=outcome, align="edge")
            bottom = [b + v for b, v in zip(bottom, values)]
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=8, ncol=4, loc="upper left", frameon=False)
        ax.spines[["top", "right"]].set_visible(False)
        ax.tick_params(labelsize=7)
        fig.autofmt_xdate()
        return _svg(fig)


def volume_against_baseline(groups: Mapping[str, Mapping[str, float | None]], title: str) -> str:
    """Grouped bars: for each period (today so far, this hour, payments today) the
    merchant's current value beside its own 7-day and 28-day baselines for the same
    period; a missing baseline (a new merchant) is drawn as nothing, not as zero."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with _quiet():
        fig, axes = plt.subplots(1, len(groups), figsize=(3.2 * max(1, len(groups)), 2.6), squeeze=False)
        for ax, (period, bars) in zip(axes[0], groups.items()):
            names = list(bars)
            values = [float(v) if v is not None else 0.0 for v in bars.values()]
            colours = ["#2f6db5" if i == 0 else "#9fb6cf" for i in range(len(names))]
            drawn = ax.bar(names, values, color=colours)
            for rect, raw in zip(drawn, bars.values()):
                ax.annotate("n/a" if raw is None else f"{float(raw):,.0f}", (rect.get_x() + rect.get_width() / 2,
                            rect.get_height()), ha="center", va="bottom", fontsize=7)
            ax.set_title(period, fontsize=9)
            ax.spines[["top", "right"]].set_visible(False)
            ax.tick_params(labelsize=7)
        fig.suptitle(title, fontsize=9)
        fig.tight_layout()
        return _svg(fig)
