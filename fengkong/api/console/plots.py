"""Server-rendered SVG plots (matplotlib, already a dependency): no chart library is
shipped to the browser. Each function returns an ``<svg>`` element to inline."""

from __future__ import annotations

import io
import threading
from datetime import datetime
from typing import Any, Mapping, Sequence

#: colours per outcome, the same on every page (and in console.css)
COLOURS = {"allow": "#4c9a6a", "challenge": "#e0b341", "review": "#e07b39", "deny": "#c0392b"}
_LOCK = threading.Lock()  # pyplot's state is global: one figure at a time


def _svg(fig: object) -> str:
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")  # type: ignore[attr-defined]
    plt.close(fig)  # type: ignore[arg-type]
    text = buf.getvalue()
    return text[text.index("<svg"):]


def decisions_per_minute(starts_ms: Sequence[int], counts: Mapping[str, Sequence[int]], title: str) -> str:
    """Stacked bars: decisions per minute by outcome."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with _LOCK:
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


def volume_against_baseline(ratios: Mapping[str, float | None], title: str) -> str:
    """Bars of the merchant's volume ratios against its own baseline (1.0), with the
    3x (hard case) and 10x (surely a problem) lines analysts talk about."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with _LOCK:
        fig, ax = plt.subplots(figsize=(7, 2.6))
        names = list(ratios)
        values = [float(v) if v is not None else 0.0 for v in ratios.values()]
        colours = ["#c0392b" if v >= 10 else "#e07b39" if v >= 3 else "#4c7fb0" for v in values]
        ax.barh(names, values, color=colours)
        for line, style in ((1.0, "-"), (3.0, "--"), (10.0, ":")):
            ax.axvline(line, color="#555", linestyle=style, linewidth=1)
        ax.text(1.0, len(names) - 0.4, " baseline", fontsize=7)
        ax.set_title(title, fontsize=9)
        ax.spines[["top", "right"]].set_visible(False)
        ax.tick_params(labelsize=7)
        return _svg(fig)
