"""The replay report: Markdown and HTML (plots embedded as base64 PNG).

Populations: "decision events" are every event that got a decision (payments,
signups, logins, card binds); the score metrics are over labelled payments.
"Stopped" = review or deny.

* decisions by outcome: decision x label (fraud / good / unlabelled) over decision events;
* for labelled data: ROC AUC and average precision of the score; precision and
  recall of "stopped" at the achieved review-plus-deny rate; per-day top-k card
  precision (for each local day, the k cards with the highest score that day —
  ties broken by card id — and the share of them with a fraud payment that day;
  the mean over days); recall per scenario;
* per rule (enforced and shadow): fires, precision (fraud share of the labelled
  events it fired on), fires where no other rule fired, and fraud only it caught.
"""

from __future__ import annotations

import base64
import html
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

STOP = ("review", "deny")
ACTIONS = ("allow", "challenge", "review", "deny")


@dataclass
class Metrics:
    """The report's figures for one replay (see the module docstring for their populations)."""

    events: int
    by_outcome: pd.DataFrame
    labelled: bool
    payments: int = 0
    fraud_payments: int = 0
    roc_auc: float | None = None
    average_precision: float | None = None
    stop_rate: float | None = None
    precision: float | None = None
    recall: float | None = None
    top_k: int = 100
    card_precision_top_k: float | None = None
    daily_top_k: pd.DataFrame | None = None
    by_scenario: pd.DataFrame | None = None
    per_rule: pd.DataFrame = field(default_factory=pd.DataFrame)
    curves: dict[str, Any] = field(default_factory=dict)


def _split(text: pd.Series) -> list[list[str]]:
    return [t.split(";") if isinstance(t, str) and t else [] for t in text]


def compute(decisions: pd.DataFrame, *, top_k: int = 100, rule_info: dict[str, dict[str, Any]] | None = None) -> Metrics:
    """The metrics of a replay's decisions (label metrics only where ``is_fraud`` is known)."""
    d = decisions
    n = len(d)
    labelled = "is_fraud" in d.columns and bool(d["is_fraud"].notna().any())
    label = d["is_fraud"].map({True: "fraud", False: "good"}).fillna("unlabelled") if labelled \
        else pd.Series(["unlabelled"] * n, index=d.index)
    by = pd.crosstab(pd.Categorical(d["decision"], categories=ACTIONS), label, dropna=False)
    by.index.name = "decision"
    by = by.reindex(columns=[c for c in ("fraud", "good", "unlabelled") if c in by.columns])
    by["all"] = by.sum(axis=1)
    by["share"] = by["all"] / max(n, 1)
    m = Metrics(n, by, labelled, top_k=top_k)
    stopped = d["decision"].isin(STOP).to_numpy()
    fraud = d["is_fraud"].to_numpy(dtype=bool, na_value=False) if labelled else np.zeros(n, dtype=bool)
    known = d["is_fraud"].notna().to_numpy() if labelled else np.zeros(n, dtype=bool)
    if labelled:
        pay = (d["type"] == "payment").to_numpy() & known
        m.payments, m.fraud_payments = int(pay.sum()), int((pay & fraud).sum())
        y, s = fraud[pay], d["score"].to_numpy(dtype=float)[pay]
        if 0 < y.sum() < len(y):
            from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

            m.roc_auc = float(roc_auc_score(y, s))
            m.average_precision = float(average_precision_score(y, s))
            fpr, tpr, _ = roc_curve(y, s)
            prec, rec, _ = precision_recall_curve(y, s)
            m.curves = {"roc": (fpr, tpr), "pr": (rec, prec), "scores": (s[y], s[~y])}
        st = stopped[pay]
        m.stop_rate = float(st.mean()) if len(st) else None
        m.precision = float(y[st].mean()) if st.any() else None
        m.recall = float(st[y].mean()) if y.any() else None
        m.daily_top_k = _daily_top_k(d[pay], top_k)
        if m.daily_top_k is not None and len(m.daily_top_k):
            m.card_precision_top_k = float(m.daily_top_k["precision"].mean())
        if "scenario" in d.columns and d["scenario"].notna().any():
            sc = d[fraud & d["scenario"].notna().to_numpy()]
            rows = []
            for name, g in sc.groupby("scenario"):
                rows.append({"scenario": name, "fraud_events": len(g),
                             "stopped": int(g["decision"].isin(STOP).sum()),
                             "challenged": int((g["decision"] == "challenge").sum()),
                             "recall": float(g["decision"].isin(STOP).mean())})
            m.by_scenario = pd.DataFrame(rows).sort_values("fraud_events", ascending=False)
    m.per_rule = _per_rule(d, fraud, known, rule_info or {})
    return m


def _daily_top_k(pay: pd.DataFrame, k: int) -> pd.DataFrame | None:
    p = pay[pay["card_fingerprint"].notna()]
    if p.empty:
        return None
    frame = pd.DataFrame({"day": p["occurred_at"].astype(str).str[:10].to_numpy(),
                          "card": p["card_fingerprint"].to_numpy(), "score": p["score"].to_numpy(dtype=float),
                          "fraud": p["is_fraud"].to_numpy(dtype=bool, na_value=False)})
    cards = frame.groupby(["day", "card"], sort=False).agg(score=("score", "max"), fraud=("fraud", "any")).reset_index()
    cards = cards.sort_values(["day", "score", "card"], ascending=[True, False, True])
    top = cards.groupby("day", sort=True).head(k)
    out = top.groupby("day").agg(cards=("card", "size"), compromised=("fraud", "sum"))
    out["precision"] = out["compromised"] / out["cards"]
    out["compromised_that_day"] = cards.groupby("day")["fraud"].sum()
    return out.reset_index()


def _per_rule(d: pd.DataFrame, fraud: np.ndarray, known: np.ndarray, info: dict[str, dict[str, Any]]) -> pd.DataFrame:
    enforced = _split(d["rules"])
    shadow = _split(d["shadow_rules"])
    fires: dict[str, list[int]] = {}
    for i, (e, s) in enumerate(zip(enforced, shadow)):
        for rid in e + s:
            fires.setdefault(rid, []).append(i)
    n_fired = np.array([len(e) + len(s) for e, s in zip(enforced, shadow)])
    rows = []
    for rid in list(info) + [r for r in fires if r not in info]:
        idx = np.array(fires.get(rid, []), dtype=np.int64)
        lab = idx[known[idx]] if len(idx) else idx
        alone = idx[n_fired[idx] == 1] if len(idx) else idx
        meta = info.get(rid, {})
        rows.append({
            "rule": rid, "mode": meta.get("mode", ""), "then": meta.get("then", ""), "fires": len(idx),
            "fire_rate": len(idx) / max(len(d), 1),
            "precision": float(fraud[lab].mean()) if len(lab) else None,
            "fires_alone": len(alone), "fraud_only_it_caught": int(fraud[alone].sum()) if len(alone) else 0,
        })
    return pd.DataFrame(rows)


# -- rendering ----------------------------------------------------------------------------------
def _fmt(v: Any, pct: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if pct:
        return f"{100 * v:.2f}%"
    if isinstance(v, float):
        return f"{v:.4f}"
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    return str(v)


def _md_table(df: pd.DataFrame, pct_cols: tuple[str, ...] = (), index: bool = False) -> str:
    if index:
        df = df.reset_index()
    head = "| " + " | ".join(map(str, df.columns)) + " |"
    sep = "| " + " | ".join("---" for _ in df.columns) + " |"
    lines = [head, sep]
    for r in df.itertuples(index=False):
        lines.append("| " + " | ".join(_fmt(v, c in pct_cols) for c, v in zip(df.columns, r)) + " |")
    return "\n".join(lines)


def _plots(m: Metrics, d: pd.DataFrame) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out: dict[str, str] = {}

    def save(name: str, fig: Any) -> None:
        buf = io.BytesIO()
        fig.tight_layout()
        fig.savefig(buf, format="png", dpi=90)
        plt.close(fig)
        out[name] = base64.b64encode(buf.getvalue()).decode()

    days = d["occurred_at"].astype(str).str[:10]
    per_day = pd.crosstab(days, pd.Categorical(d["decision"], categories=ACTIONS), dropna=False)
    fig, ax = plt.subplots(figsize=(8, 3.2))
    bottom = np.zeros(len(per_day))
    colors = {"allow": "#9ccc65", "challenge": "#ffd54f", "review": "#ffa726", "deny": "#e53935"}
    x = np.arange(len(per_day))
    for a in ACTIONS:
        if a == "allow":
            continue
        ax.bar(x, per_day[a].to_numpy(), bottom=bottom, color=colors[a], label=a, width=0.9)
        bottom += per_day[a].to_numpy()
    ax.set_title("decisions other than allow, per day")
    ax.set_xticks(x[:: max(1, len(x) // 10)], per_day.index[:: max(1, len(x) // 10)], rotation=30, fontsize=7)
    ax.legend(fontsize=7)
    save("decisions_per_day", fig)
    if m.curves:
        fig, axes = plt.subplots(1, 3, figsize=(11, 3.4))
        fpr, tpr = m.curves["roc"]
        axes[0].plot(fpr, tpr)
        axes[0].plot([0, 1], [0, 1], ls=":", c="grey")
        axes[0].set_title(f"ROC (AUC {m.roc_auc:.3f})")
        axes[0].set_xlabel("false positive rate")
        axes[0].set_ylabel("true positive rate")
        rec, prec = m.curves["pr"]
        axes[1].plot(rec, prec)
        axes[1].set_title(f"precision-recall (AP {m.average_precision:.3f})")
        axes[1].set_xlabel("recall")
        axes[1].set_ylabel("precision")
        s_f, s_g = m.curves["scores"]
        bins = np.linspace(0, max(1.0, float(np.max(np.concatenate([s_f, s_g])))), 30)
        axes[2].hist(s_g, bins=bins, alpha=0.6, label="good", density=True)
        axes[2].hist(s_f, bins=bins, alpha=0.6, label="fraud", density=True)
        axes[2].set_yscale("log")
        axes[2].set_title("score by label (payments)")
        axes[2].legend(fontsize=7)
        save("score_curves", fig)
    if m.daily_top_k is not None and len(m.daily_top_k):
        fig, ax = plt.subplots(figsize=(8, 3))
        ax.plot(np.arange(len(m.daily_top_k)), m.daily_top_k["precision"], marker=".")
        ax.set_ylim(0, 1.02)
        ax.set_title(f"card precision top-{m.top_k} per day (mean {m.card_precision_top_k:.3f})")
        t = m.daily_top_k["day"]
        step = max(1, len(t) // 10)
        ax.set_xticks(np.arange(len(t))[::step], t[::step], rotation=30, fontsize=7)
        save("top_k", fig)
    return out


def render(m: Metrics, d: pd.DataFrame, *, meta: dict[str, Any], plots: bool = True) -> tuple[str, str]:
    """(markdown, html)."""
    lines = ["# fengkong replay report", ""]
    for k, v in meta.items():
        lines.append(f"- **{k}**: {v}")
    lines += ["", "## Decisions by outcome", "",
              "Decision events (payments, signups, logins, card binds); label from the history.", "",
              _md_table(m.by_outcome, pct_cols=("share",), index=True), ""]
    if m.labelled:
        lines += ["## Score and decisions against the labels (payments)", "",
                  f"- labelled payments: {m.payments:,}, of them fraud: {m.fraud_payments:,}",
                  f"- ROC AUC of the score: {_fmt(m.roc_auc)}",
                  f"- average precision of the score: {_fmt(m.average_precision)}",
                  f"- review + deny rate: {_fmt(m.stop_rate, True)}; at that rate precision "
                  f"{_fmt(m.precision, True)}, recall {_fmt(m.recall, True)}",
                  f"- card precision top-{m.top_k} (mean over {0 if m.daily_top_k is None else len(m.daily_top_k)} "
                  f"days): {_fmt(m.card_precision_top_k)}", ""]
        if m.daily_top_k is not None and len(m.daily_top_k):
            lines += [f"### Daily card precision top-{m.top_k}", "", "<details><summary>per day</summary>", "",
                      _md_table(m.daily_top_k, pct_cols=("precision",)), "", "</details>", ""]
        if m.by_scenario is not None and len(m.by_scenario):
            lines += ["## Recall per scenario", "", "Fraud-labelled decision events of each scenario; "
                      "recall = share stopped (review or deny).", "",
                      _md_table(m.by_scenario, pct_cols=("recall",)), ""]
    lines += ["## Rules", "", "fires: decision events the rule fired on; precision: fraud share of the labelled "
              "ones; fires alone: no other rule fired; fraud only it caught: fraud events among those.", "",
              _md_table(m.per_rule.sort_values("fires", ascending=False), pct_cols=("fire_rate", "precision")), ""]
    rejects = meta.get("_rejects") or []
    lines = [ln for ln in lines if not ln.startswith("- **_rejects**")]
    if rejects:
        lines += ["## Rows the event contract refused", "", "| source row | field | reason |", "| --- | --- | --- |"]
        lines += [f"| {r} | {f} | {reason} |" for r, f, reason in rejects]
        lines.append("")
    md = "\n".join(lines)
    images = _plots(m, d) if plots else {}
    body = _md_to_html(md)
    figs = "".join(f'<h2>{html.escape(name.replace("_", " "))}</h2><img alt="{name}" '
                   f'src="data:image/png;base64,{b64}"/>' for name, b64 in images.items())
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>fengkong replay report</title><style>"
            "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
            "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:2px 6px;"
            "text-align:right}td:first-child,th:first-child{text-align:left}img{max-width:100%}"
            "</style></head><body>" + body + "<h1>Plots</h1>" + figs + "</body></html>")
    return md, page


def _md_to_html(md: str) -> str:
    """Just enough Markdown for this report: headings, bullets, tables, raw <details>."""
    out: list[str] = []
    table: list[list[str]] = []
    in_list = False

    def inline(t: str) -> str:
        t = html.escape(t)
        parts = t.split("**")
        return "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))

    def flush() -> None:
        nonlocal table
        if table:
            head, *rows = table
            out.append("<table><tr>" + "".join(f"<th>{inline(c)}</th>" for c in head) + "</tr>"
                       + "".join("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in r) + "</tr>" for r in rows)
                       + "</table>")
            table = []

    for line in md.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if all(set(c) <= {"-"} for c in cells):
                continue
            table.append(cells)
            continue
        flush()
        if line.startswith("- "):
            if not in_list:
                out.append("<ul>")
                in_list = True
            out.append(f"<li>{inline(line[2:])}</li>")
            continue
        if in_list:
            out.append("</ul>")
            in_list = False
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            out.append(f"<h{level}>{inline(line[level:].strip())}</h{level}>")
        elif line.startswith("<"):
            out.append(line)
        elif line.strip():
            out.append(f"<p>{inline(line)}</p>")
    flush()
    if in_list:
        out.append("</ul>")
    return "\n".join(out)


def write_report(decisions: pd.DataFrame, out_dir: Path, *, meta: dict[str, Any], top_k: int = 100,
                 rule_info: dict[str, dict[str, Any]] | None = None, plots: bool = True) -> tuple[Path, Path, Metrics]:
    """Write ``report.md`` and ``report.html`` into ``out_dir``; returns both paths and the metrics."""
    m = compute(decisions, top_k=top_k, rule_info=rule_info)
    md, page = render(m, decisions, meta=meta, plots=plots)
    out_dir.mkdir(parents=True, exist_ok=True)
    md_path, html_path = out_dir / "report.md", out_dir / "report.html"
    md_path.write_text(md, encoding="utf-8")
    html_path.write_text(page, encoding="utf-8")
    return md_path, html_path, m
