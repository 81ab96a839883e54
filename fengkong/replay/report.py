"""The replay report: Markdown and HTML (plots embedded as base64 PNG).

Populations: "decision events" are every event that got a decision (payments,
signups, logins, card binds); the score metrics are over labelled payments. Every
figure counts only the decisions of the evaluation window (`evaluation.Window`,
``--evaluate-from`` / ``--evaluate-until``; the whole history by default); the
replay itself ran the whole history, so features were warm. "Friction" = challenge,
review or deny; "stopped" = review or deny.

* decisions by outcome: decision x label (fraud / good / unlabelled) over decision events;
* for labelled data: ROC AUC and average precision of the score; precision and
  recall of "stopped" at the achieved review-plus-deny rate; daily top-k card
  precision with cards already known compromised left out, averaged over the days
  that had fraud (`evaluation.daily_top_k`); recall per scenario over fraud
  payments, as friction and as stopped;
* per rule (enforced and shadow): fires, precision (fraud share of the labelled
  events it fired on), fires where no other rule fired, and, for rules whose action
  stops (review or deny), fraud payments only it caught: it fired and no other
  stopping rule did (n/a for a rule that allows or challenges).
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

from fengkong.replay.evaluation import Window, business_days, daily_top_k, known_compromised

STOP = ("review", "deny")
FRICTION = ("challenge", "review", "deny")
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
    window: Window = field(default_factory=Window)
    outside_window: int = 0  # decision events of the history left out of the figures
    top_k_days_with_fraud: int = 0


def _split(text: pd.Series) -> list[list[str]]:
    return [t.split(";") if isinstance(t, str) and t else [] for t in text]


def compute(decisions: pd.DataFrame, *, top_k: int = 100, rule_info: dict[str, dict[str, Any]] | None = None,
            window: Window | None = None, card_reports: pd.DataFrame | None = None) -> Metrics:
    """The metrics of a replay's decisions in ``window`` (label metrics only where ``is_fraud``
    is known). ``card_reports``: the fraud reports and chargebacks the replay sent
    (``occurred_at``, ``card_fingerprint``, ``refers_to``), for the top-k's known cards."""
    win = window or Window()
    all_days = business_days(decisions["occurred_at"])
    inside = win.mask(all_days)
    d = decisions[inside].reset_index(drop=True)
    n = len(d)
    labelled = "is_fraud" in d.columns and bool(d["is_fraud"].notna().any())
    label = d["is_fraud"].map({True: "fraud", False: "good"}).fillna("unlabelled") if labelled \
        else pd.Series(["unlabelled"] * n, index=d.index)
    by = pd.crosstab(pd.Categorical(d["decision"], categories=ACTIONS), label, dropna=False)
    by.index.name = "decision"
    by = by.reindex(columns=[c for c in ("fraud", "good", "unlabelled") if c in by.columns])
    by["all"] = by.sum(axis=1)
    by["share"] = by["all"] / max(n, 1)
    m = Metrics(n, by, labelled, top_k=top_k, window=win, outside_window=int((~inside).sum()))
    stopped = d["decision"].isin(STOP).to_numpy()
    fraud = d["is_fraud"].to_numpy(dtype=bool, na_value=False) if labelled else np.zeros(n, dtype=bool)
    known = d["is_fraud"].notna().to_numpy() if labelled else np.zeros(n, dtype=bool)
    pay = (d["type"] == "payment").to_numpy() & known
    if labelled:
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
        full_pay = (decisions["type"] == "payment").to_numpy() & decisions["is_fraud"].notna().to_numpy()
        m.daily_top_k = daily_top_k(decisions[full_pay], all_days[full_pay], top_k, window=win,
                                    known=known_compromised(card_reports, decisions))
        if m.daily_top_k is not None and m.daily_top_k["had_fraud"].any():
            days = m.daily_top_k[m.daily_top_k["had_fraud"]]
            m.top_k_days_with_fraud = len(days)
            m.card_precision_top_k = float(days["precision"].mean())
        m.by_scenario = _by_scenario(d, pay & fraud)
    m.per_rule = _per_rule(d, fraud, known, rule_info or {})
    return m


def _by_scenario(d: pd.DataFrame, fraud_pay: np.ndarray) -> pd.DataFrame | None:
    """Recall per scenario over fraud payments: friction (challenge, review, deny) and stopped."""
    if "scenario" not in d.columns:
        return None
    sc = d["scenario"].astype(object).where(d["scenario"].notna(), "")
    sc = sc.map(lambda v: "" if v is None else str(v))
    has = fraud_pay & (sc != "").to_numpy()
    if not has.any():
        return None
    g = pd.DataFrame({"scenario": sc[has].to_numpy(), "decision": d["decision"].to_numpy()[has]})
    rows = [{"scenario": name, "fraud_payments": len(x),
             "friction": int(x["decision"].isin(FRICTION).sum()), "stopped": int(x["decision"].isin(STOP).sum()),
             "recall_friction": float(x["decision"].isin(FRICTION).mean()),
             "recall_stopped": float(x["decision"].isin(STOP).mean())}
            for name, x in g.groupby("scenario")]
    return pd.DataFrame(rows).sort_values(["fraud_payments", "scenario"], ascending=[False, True])


def _per_rule(d: pd.DataFrame, fraud: np.ndarray, known: np.ndarray, info: dict[str, dict[str, Any]]) -> pd.DataFrame:
    enforced = _split(d["rules"])
    shadow = _split(d["shadow_rules"])
    fires: dict[str, list[int]] = {}
    for i, (e, s) in enumerate(zip(enforced, shadow)):
        for rid in e + s:
            fires.setdefault(rid, []).append(i)
    n_fired = np.array([len(e) + len(s) for e, s in zip(enforced, shadow)], dtype=np.int64)
    stops = {rid for rid, meta in info.items() if meta.get("then") in STOP}
    n_stopping = np.array([sum(r in stops for r in e + s) for e, s in zip(enforced, shadow)], dtype=np.int64)
    fraud_pay = fraud & (d["type"] == "payment").to_numpy()
    rows = []
    for rid in list(info) + [r for r in fires if r not in info]:
        idx = np.array(fires.get(rid, []), dtype=np.int64)
        lab = idx[known[idx]] if len(idx) else idx
        alone = idx[n_fired[idx] == 1] if len(idx) else idx
        meta = info.get(rid, {})
        only: int | None = None
        if rid in stops:
            only = int(fraud_pay[idx[n_stopping[idx] == 1]].sum()) if len(idx) else 0
        rows.append({
            "rule": rid, "mode": meta.get("mode", ""), "then": meta.get("then", ""), "fires": len(idx),
            "fire_rate": len(idx) / max(len(d), 1),
            "precision": float(fraud[lab].mean()) if len(lab) else None,
            "fires_alone": len(alone), "fraud_only_it_caught": only,
        })
    out = pd.DataFrame(rows, columns=["rule", "mode", "then", "fires", "fire_rate", "precision", "fires_alone",
                                      "fraud_only_it_caught"])
    out["fraud_only_it_caught"] = pd.array([r["fraud_only_it_caught"] for r in rows], dtype="Int64")
    return out


# -- rendering ----------------------------------------------------------------------------------
def _fmt(v: Any, pct: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
        return "n/a"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
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
        ax.plot(np.arange(len(m.daily_top_k)), m.daily_top_k["precision"].astype(float), marker=".")
        ax.set_ylim(0, 1.02)
        ax.set_title(f"card precision top-{m.top_k} per day (mean {m.card_precision_top_k:.3f})")
        t = m.daily_top_k["day"]
        step = max(1, len(t) // 10)
        ax.set_xticks(np.arange(len(t))[::step], t[::step], rotation=30, fontsize=7)
        save("top_k", fig)
    return out


def render(m: Metrics, d: pd.DataFrame, *, meta: dict[str, Any], plots: bool = True,
           refusals: list[dict[str, Any]] | None = None) -> tuple[str, str]:
    """(markdown, html). ``refusals``: rows of `Refusals.table` (rows not replayed, and why)."""
    lines = ["# fengkong replay report", ""]
    for k, v in meta.items():
        lines.append(f"- **{k}**: {v}")
    lines.append(f"- **evaluated**: {m.window.describe()}; {m.events:,} decision events"
                 + (f" ({m.outside_window:,} outside the window replayed, not scored)" if m.outside_window else ""))
    lines += ["", "## Decisions by outcome", "",
              "Decision events (payments, signups, logins, card binds) of the window; label from the history.", "",
              _md_table(m.by_outcome, pct_cols=("share",), index=True), ""]
    if m.labelled:
        lines += ["## Score and decisions against the labels (payments)", "",
                  f"- labelled payments: {m.payments:,}, of them fraud: {m.fraud_payments:,}",
                  f"- ROC AUC of the score: {_fmt(m.roc_auc)}",
                  f"- average precision of the score: {_fmt(m.average_precision)}",
                  f"- review + deny rate: {_fmt(m.stop_rate, True)}; at that rate precision "
                  f"{_fmt(m.precision, True)}, recall {_fmt(m.recall, True)}",
                  f"- card precision top-{m.top_k} (mean over {m.top_k_days_with_fraud} days that had fraud; "
                  f"cards already known compromised left out): {_fmt(m.card_precision_top_k)}", ""]
        if m.daily_top_k is not None and len(m.daily_top_k):
            lines += [f"### Daily card precision top-{m.top_k}", "",
                      "candidates: cards with a labelled payment that day, less those known compromised "
                      "(a fraud report or chargeback before the day, or found by an earlier day's top-k: "
                      "known_left_out); compromised: top-k cards with a fraud payment that day.", "",
                      "<details><summary>per day</summary>", "",
                      _md_table(m.daily_top_k, pct_cols=("precision",)), "", "</details>", ""]
        if m.by_scenario is not None and len(m.by_scenario):
            lines += ["## Recall per scenario", "", "Fraud-labelled payments of each scenario; friction = "
                      "challenge, review or deny; stopped = review or deny.", "",
                      _md_table(m.by_scenario, pct_cols=("recall_friction", "recall_stopped")), ""]
    lines += ["## Rules", "", "fires: decision events the rule fired on; precision: fraud share of the labelled "
              "ones; fires alone: no other rule fired; fraud only it caught: for a rule that stops (review or "
              "deny), fraud payments it fired on where no other stopping rule fired (n/a for other rules).", "",
              _md_table(m.per_rule.sort_values("fires", ascending=False), pct_cols=("fire_rate", "precision")), ""]
    if refusals:
        lines += ["## Rows not replayed", "", "Rows the mapping could not read (skipped within max_bad_share) "
                  "and rows the event contract refused, per field and reason; row numbers count data rows "
                  "from 1.", "", _md_table(pd.DataFrame(refusals)), ""]
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
                 rule_info: dict[str, dict[str, Any]] | None = None, plots: bool = True,
                 window: Window | None = None, card_reports: pd.DataFrame | None = None,
                 refusals: list[dict[str, Any]] | None = None) -> tuple[Path, Path, Metrics]:
    """Write ``report.md`` and ``report.html`` into ``out_dir``; returns both paths and the metrics.
    The figures (and the plots) count only the decisions of ``window``."""
    m = compute(decisions, top_k=top_k, rule_info=rule_info, window=window, card_reports=card_reports)
    shown = decisions[m.window.mask(business_days(decisions["occurred_at"]))]
    md, page = render(m, shown, meta=meta, plots=plots, refusals=refusals)
    out_dir.mkdir(parents=True, exist_ok=True)
    md_path, html_path = out_dir / "report.md", out_dir / "report.html"
    md_path.write_text(md, encoding="utf-8")
    html_path.write_text(page, encoding="utf-8")
    return md_path, html_path, m
