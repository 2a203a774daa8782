"""A visual evaluation report: PNG plots and one self-contained HTML page.

``rewardkit report EVAL.json [MORE.json ...]`` (or ``rewardkit eval --report DIR``) reads results
written by ``rewardkit eval --output`` and their per-example sidecar (``*.rewards.jsonl``) and writes:

* ``reward_histograms.png`` — rewards of the annotators' best vs worst completion, per run;
* ``reliability.png`` — accuracy vs confidence of σ(Δr) per bin (and of normalised rewards when
  known), with the count of pairs per bin;
* ``accuracy.png`` — overall, section and per-subset accuracy with bootstrap intervals, beside the
  "longer wins" baseline;
* ``length.png`` — accuracy by length difference (characters) with the baseline and pair counts;
* ``three_way.png`` — win/tie/loss confusion matrices, when the data has annotator ties;
* ``report.html`` — all of the above embedded (base64) with the tables, readable offline.

Several results side by side (e.g. trained vs untrained on the same data) share each plot.
Plots use matplotlib's Agg canvas, so no display is needed.
"""

from __future__ import annotations

import base64
import html
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rewardkit.errors import UserError

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]


@dataclass
class EvalRun:
    path: Path
    result: dict[str, Any]
    records: list[dict[str, Any]] | None  # per-example rewards, None if the sidecar is missing
    label: str


def find_eval_json(spec: str | Path) -> Path:
    """An eval results JSON, given as the file or as a folder holding exactly one."""
    path = Path(spec)
    if path.is_file():
        return path
    if path.is_dir():
        # The folder itself, or one level down (`eval --report RUN/report` writes RUN/report/eval.json).
        found = sorted(p for p in [*path.glob("*.json"), *path.glob("*/*.json")] if _looks_like_eval(p))
        if len(found) == 1:
            return found[0]
        if found:
            raise UserError(f"{path} holds several eval results ({', '.join(str(p) for p in found)}); "
                             "name the one to report")
        raise UserError(f"{path} holds no eval results; write them first with "
                         f"`rewardkit eval --model MODEL --data DATA --output {path / 'eval.json'}`")
    raise FileNotFoundError(f"no such eval results file or folder: {spec}")


def _looks_like_eval(path: Path) -> bool:
    try:
        obj = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return False
    return isinstance(obj, dict) and "pairwise_accuracy" in obj and "calibration" in obj


def load_eval(spec: str | Path) -> EvalRun:
    path = find_eval_json(spec)
    try:
        result = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(result, dict) or "pairwise_accuracy" not in result or "calibration" not in result:
        raise UserError(f"{path}: not a rewardkit eval result (no 'pairwise_accuracy'/'calibration'); "
                         "write one with `rewardkit eval --output FILE.json`")
    records = None
    sidecar = path.parent / result.get("rewards_file", path.name.removesuffix(".json") + ".rewards.jsonl")
    if sidecar.exists():
        records = []
        for lineno, line in enumerate(sidecar.read_text().splitlines(), start=1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise UserError(f"{sidecar}:{lineno}: not valid JSON ({e.msg})") from None
    return EvalRun(path, result, records, label=Path(str(result.get("model", path.stem))).name or path.stem)


def _unique_labels(runs: list[EvalRun]) -> None:
    seen: dict[str, int] = {}
    for run in runs:
        seen[run.label] = seen.get(run.label, 0) + 1
    for run in runs:
        if seen[run.label] > 1:  # same model on different data (or twice): say which file
            source = Path(str(run.result.get("data", {}).get("source", run.path.stem))).name
            run.label = f"{run.label} · {source} ({run.path.stem})"


# -------------------------------------------------------------------------------------------- plots


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def _save(fig, path: Path) -> Path:
    fig.savefig(path, format="png", metadata={"Software": None})
    return path


def _legend_above(ax) -> None:
    # Above the axes, so it never hides a data point.
    ax.legend(fontsize=7, loc="lower left", bbox_to_anchor=(0.0, 1.01), frameon=False)


def best_worst_rewards(records: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """Rewards of each example's annotator-best and annotator-worst completions (tie-only examples left out)."""
    best, worst = [], []
    for rec in records:
        ranks = np.asarray(rec["ranks"])
        if ranks.min() == ranks.max():
            continue
        r = np.asarray(rec["rewards"], dtype=np.float64)
        best += r[ranks == ranks.min()].tolist()
        worst += r[ranks == ranks.max()].tolist()
    return np.asarray(best), np.asarray(worst)


def plot_histograms(runs: list[EvalRun], path: Path) -> Path:
    fig = _figure(7.5, 2.6 * len(runs))
    axes = np.atleast_1d(fig.subplots(len(runs), 1))
    for ax, run in zip(axes, runs):
        if not run.records:
            ax.text(0.5, 0.5, f"{run.label}: no per-example rewards file beside {run.path.name}",
                    ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
            continue
        best, worst = best_worst_rewards(run.records)
        both = np.concatenate([best, worst])
        bins = np.histogram_bin_edges(both, bins=min(40, max(10, int(math.sqrt(len(both))))))
        ax.hist(best, bins=bins, alpha=0.55, color="#2ca02c", label=f"chosen / best (mean {best.mean():+.3f})")
        ax.hist(worst, bins=bins, alpha=0.55, color="#d62728", label=f"rejected / worst (mean {worst.mean():+.3f})")
        ax.axvline(best.mean(), color="#2ca02c", lw=1.5)
        ax.axvline(worst.mean(), color="#d62728", lw=1.5)
        ax.set_title(f"{run.label}: accuracy {run.result['pairwise_accuracy']:.3f} on "
                     f"{run.result['pairs']} pairs", fontsize=10)
        ax.set_xlabel("reward")
        ax.set_ylabel("completions")
        ax.legend(fontsize=8)
    return _save(fig, path)


def plot_reliability(runs: list[EvalRun], path: Path) -> Path:
    fig = _figure(7.5, 6.0)
    top, bottom = fig.subplots(2, 1, height_ratios=[3, 1], sharex=True)
    top.plot([0.5, 1.0], [0.5, 1.0], color="grey", ls=":", lw=1, label="perfect calibration")
    n_series = sum(1 + ("calibration_normalized" in r.result) for r in runs)
    width = 0.05 / max(n_series, 1) * 0.9
    k = 0
    for i, run in enumerate(runs):
        color = COLORS[i % len(COLORS)]
        for key, style, name in (("calibration", "-", "σ(Δr)"), ("calibration_normalized", "--", "σ(Δr/std)")):
            cal = run.result.get(key)
            if not cal:
                continue
            bins = [b for b in cal["bins"] if b["count"]]
            x = [b["confidence"] for b in bins]
            y = [b["accuracy"] for b in bins]
            top.plot(x, y, style, marker="o", color=color,
                     label=f"{run.label} {name}: ECE {cal['ece']:.3f}, Brier {cal['brier']:.3f}")
            centers = [(b["lo"] + b["hi"]) / 2 for b in cal["bins"]]
            bottom.bar(np.asarray(centers) - 0.025 + (k + 0.5) * width, [b["count"] for b in cal["bins"]], width=width,
                       color=color, alpha=0.9 if style == "-" else 0.45)
            k += 1
    top.set_xlim(0.5, 1.0)
    top.set_ylim(0.0, 1.02)
    top.set_ylabel("accuracy of the predicted winner")
    fig.suptitle("Reliability of P(better ≻ worse) = σ(Δr)", fontsize=10)
    _legend_above(top)
    bottom.set_xlabel("confidence max(σ(Δr), 1 − σ(Δr))")
    bottom.set_ylabel("pairs")
    return _save(fig, path)


def accuracy_rows(result: dict[str, Any]) -> list[tuple[str, float | None, list[float] | None]]:
    """(name, value, interval) rows for the accuracy bar chart and table, in display order."""
    rows: list[tuple[str, float | None, list[float] | None]] = [
        ("overall (RewardBench)" if "sections" in result else "overall", result["accuracy"], result.get("accuracy_ci")),
        ("pairwise", result["pairwise_accuracy"], result.get("pairwise_accuracy_ci")),
        ("longer wins (baseline)", result["length"]["length_baseline_accuracy"],
         result["length"].get("length_baseline_accuracy_ci")),
    ]
    for name, value in (result.get("sections") or {}).items():
        rows.append((f"section: {name}", value, (result.get("sections_ci") or {}).get(name)))
    extra = result.get("extra_results") or {}
    if set(extra) != {"all"}:
        for name, value in extra.items():
            rows.append((f"subset: {name}", value, (result.get("subset_accuracy_ci") or {}).get(name)))
    if "rankings" in result and result["rankings"].get("prompts"):
        rows.append(("rankings: top-1", result["rankings"]["top1_accuracy"], None))
    if "tied" in result:
        t = result["tied"]
        if t.get("accuracy") is not None:
            rows.append(("annotator ties called close", t["accuracy"], t.get("accuracy_ci")))
        rows.append(("3-way (win/tie/loss)", t["three_way_accuracy"], t.get("three_way_accuracy_ci")))
    return rows


def plot_accuracy(runs: list[EvalRun], path: Path) -> Path:
    names: list[str] = []
    for run in runs:
        names += [n for n, _, _ in accuracy_rows(run.result) if n not in names]
    fig = _figure(7.5, 1.2 + 0.32 * len(names) * max(1, len(runs)) ** 0.6)
    ax = fig.subplots()
    height = 0.8 / len(runs)
    for i, run in enumerate(runs):
        rows = {n: (v, ci) for n, v, ci in accuracy_rows(run.result)}
        ys, xs, lo, hi = [], [], [], []
        for j, name in enumerate(names):
            if name in rows and rows[name][0] is not None:
                v, ci = rows[name]
                ys.append(j - 0.4 + (i + 0.5) * height)
                xs.append(v)
                lo.append(v - ci[0] if ci else 0)
                hi.append(ci[1] - v if ci else 0)
        color = COLORS[i % len(COLORS)]
        ax.barh(ys, xs, height=height * 0.9, color=color, alpha=0.8, label=run.label,
                xerr=[lo, hi], error_kw={"ecolor": "black", "capsize": 2, "lw": 1})
        for y, x, up in zip(ys, xs, hi):
            ax.text(min(x + up + 0.01, 0.93), y, f"{x:.3f}", va="center", fontsize=7)  # right of the interval
    ax.axvline(0.5, color="grey", ls=":", lw=1)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("accuracy (bars: 95% bootstrap interval over prompts)")
    _legend_above(ax)
    return _save(fig, path)


def _bucket_label(b: dict[str, Any]) -> str:
    lo, hi = b["lo"], b["hi"]
    if lo is None:
        return f"< {hi:g}"
    if hi is None:
        return f"≥ {lo:g}"
    return f"[{lo:g}, {hi:g})"


def plot_length(runs: list[EvalRun], path: Path) -> Path:
    fig = _figure(7.5, 5.2)
    top, bottom = fig.subplots(2, 1, height_ratios=[3, 1], sharex=True)
    buckets0 = runs[0].result["length"]["buckets"]
    x = np.arange(len(buckets0))
    baselines_drawn: set[str] = set()
    for i, run in enumerate(runs):
        color = COLORS[i % len(COLORS)]
        buckets = run.result["length"]["buckets"]
        acc = np.array([np.nan if b["accuracy"] is None else b["accuracy"] for b in buckets])
        err = np.array([[a - b["accuracy_ci"][0], b["accuracy_ci"][1] - a] if b.get("accuracy_ci") else [0, 0]
                        for a, b in zip(acc, buckets)]).T
        top.errorbar(x + 0.05 * i, acc, yerr=err, marker="o", color=color, capsize=3,
                     label=f"{run.label} (model prefers longer in "
                           f"{run.result['length'].get('model_prefers_longer') or 0:.0%} of pairs)")
        source = json.dumps(run.result.get("data", {}).get("source", run.path.name))
        if source not in baselines_drawn:  # the baseline depends on the data only
            baselines_drawn.add(source)
            base = [np.nan if b["length_baseline_accuracy"] is None else b["length_baseline_accuracy"] for b in buckets]
            top.plot(x, base, ls="--", color="dimgrey", marker="s", ms=5, zorder=5, label="longer wins (baseline)")
        if i == 0:
            bottom.bar(x, [b["count"] for b in buckets], color="grey", alpha=0.6)
    top.axhline(0.5, color="grey", ls=":", lw=1)
    top.set_ylim(-0.02, 1.02)
    top.set_ylabel("pairwise accuracy")
    fig.suptitle("Accuracy by length difference len(better) − len(worse), in characters", fontsize=10)
    _legend_above(top)
    bottom.set_xticks(x, [_bucket_label(b) for b in buckets0], fontsize=8)
    bottom.set_ylabel("pairs")
    bottom.set_xlabel("characters")
    return _save(fig, path)


def plot_three_way(runs: list[EvalRun], path: Path) -> Path | None:
    tied = [r for r in runs if "tied" in r.result]
    if not tied:
        return None
    fig = _figure(3.6 * len(tied), 3.4)
    axes = np.atleast_1d(fig.subplots(1, len(tied)))
    for ax, run in zip(axes, tied):
        t = run.result["tied"]
        m = np.asarray(t["three_way_confusion"])
        ax.imshow(m, cmap="Blues")
        for (r, c), v in np.ndenumerate(m):
            ax.text(c, r, str(v), ha="center", va="center", color="white" if v > m.max() / 2 else "black")
        labels = ["1st", "tie", "2nd"]
        ax.set_xticks(range(3), labels)
        ax.set_yticks(range(3), labels)
        ax.set_xlabel("model")
        ax.set_ylabel("annotators")
        ax.set_title(f"{run.label}\n3-way acc {t['three_way_accuracy']:.3f}, macro-F1 {t['three_way_macro_f1']:.3f}\n"
                     f"tie if |σ(Δr)−½| < {t['threshold']:.3g} ({t['threshold_rule']})", fontsize=8)
    return _save(fig, path)


# --------------------------------------------------------------------------------------------- HTML


def _fmt(v: Any, ci: list[float] | None = None) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        text = f"{v:.4f}" if abs(v) < 100 else f"{v:.1f}"
        if ci:
            text += f" <span class=ci>[{ci[0]:.3f}, {ci[1]:.3f}]</span>"
        return text
    return html.escape(str(v))


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def summary_rows(runs: list[EvalRun]) -> list[list[str]]:
    def get(result: dict[str, Any], *keys: str) -> Any:
        for k in keys:
            if not isinstance(result, dict) or k not in result:
                return None
            result = result[k]
        return result

    spec: list[tuple[str, tuple[str, ...], tuple[str, ...] | None]] = [
        ("accuracy (RewardBench convention)", ("accuracy",), ("accuracy_ci",)),
        ("pairwise accuracy (reward ties wrong)", ("pairwise_accuracy",), ("pairwise_accuracy_ci",)),
        ("examples scored (num_prompts)", ("num_prompts",), None),
        ("strict pairs", ("pairs",), None),
        ("reward ties (Δr = 0)", ("ties",), None),
        ("longer wins baseline", ("length", "length_baseline_accuracy"), ("length", "length_baseline_accuracy_ci")),
        ("model prefers the longer reply", ("length", "model_prefers_longer"), None),
        ("Spearman(reward, length)", ("length", "reward_length_spearman"), None),
        ("mean margin Δr", ("mean_margin",), None),
        ("ECE of σ(Δr)", ("calibration", "ece"), None),
        ("Brier of σ(Δr)", ("calibration", "brier"), None),
        ("ECE of σ(Δr/std)", ("calibration_normalized", "ece"), None),
        ("Brier of σ(Δr/std)", ("calibration_normalized", "brier"), None),
        ("rankings: pairwise accuracy", ("rankings", "pairwise_accuracy"), None),
        ("rankings: Kendall τ-b", ("rankings", "kendall_tau"), None),
        ("rankings: top-1", ("rankings", "top1_accuracy"), None),
        ("annotator-tied pairs", ("tied", "tied_pairs"), None),
        ("ties called close", ("tied", "accuracy"), ("tied", "accuracy_ci")),
        ("tie threshold t", ("tied", "threshold"), None),
        ("3-way accuracy", ("tied", "three_way_accuracy"), ("tied", "three_way_accuracy_ci")),
        ("3-way macro-F1", ("tied", "three_way_macro_f1"), None),
    ]
    rows = []
    for name, keys, ci_keys in spec:
        values = [get(r.result, *keys) for r in runs]
        if all(v is None for v in values):
            continue
        rows.append([html.escape(name)] + [_fmt(v, get(r.result, *ci_keys) if ci_keys else None)
                                           for v, r in zip(values, runs)])
    return rows


def render_html(runs: list[EvalRun], images: dict[str, Path]) -> str:
    labels = [html.escape(r.label) for r in runs]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>rewardkit evaluation report</title><style>",
        "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}",
        "table{border-collapse:collapse;margin:0.5em 0 1.5em;font-size:14px}",
        "th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}td:first-child,th:first-child{text-align:left}",
        "th{background:#f3f3f3}.ci{color:#777;font-size:12px}img{max-width:100%;border:1px solid #eee}",
        "code{background:#f6f6f6;padding:1px 3px}</style></head><body>",
        "<h1>Reward model evaluation</h1>",
    ]
    for run in runs:
        data = run.result.get("data", {})
        boot = run.result.get("bootstrap", {})
        scorer = run.result.get("scorer", {})
        parts.append(
            f"<p><b>{html.escape(run.label)}</b>: model <code>{html.escape(str(run.result.get('model')))}</code> "
            f"({html.escape(str(scorer.get('kind', '')))}), data <code>{html.escape(str(data.get('source', '?')))}</code> "
            f"({data.get('loaded', '?')} of {data.get('records', '?')} records loaded, skipped: "
            f"{html.escape(json.dumps(data.get('skipped', {})))}); bootstrap: {boot.get('samples')} resamples of "
            f"{boot.get('prompts')} prompts, seed {boot.get('seed')}"
            + (f"; head init seed {scorer['head_init_seed']}" if "head_init_seed" in scorer else "")
            + f"; results file <code>{html.escape(str(run.path))}</code>.</p>")
    parts += ["<h2>Summary</h2>", "<p>Intervals are 95% percentile bootstrap intervals, resampling prompts.</p>",
              _table(["metric", *labels], summary_rows(runs))]
    if "accuracy" in images:
        parts += ["<h2>Accuracy</h2>", _img(images["accuracy"])]
    names = sorted({s for r in runs for s in (r.result.get("extra_results") or {})})
    if names and names != ["all"]:
        rows = [[html.escape(s)] + [_fmt((r.result.get("extra_results") or {}).get(s),
                                         (r.result.get("subset_accuracy_ci") or {}).get(s))
                                    + f" <span class=ci>n={(r.result.get('subset_counts') or {}).get(s, 0)}</span>"
                                    for r in runs] for s in names]
        parts += ["<h3>Per subset</h3>", _table(["subset", *labels], rows)]
    sections = sorted({s for r in runs for s in (r.result.get("sections") or {})})
    if sections:
        rows = [[html.escape(s)] + [_fmt((r.result.get("sections") or {}).get(s),
                                         (r.result.get("sections_ci") or {}).get(s)) for r in runs] for s in sections]
        parts += ["<h3>Sections (example-count-weighted means of subsets)</h3>", _table(["section", *labels], rows)]
    if "histograms" in images:
        parts += ["<h2>Rewards of chosen and rejected completions</h2>", _img(images["histograms"])]
    parts += ["<h2>Calibration</h2>", _img(images["reliability"])]
    rows = []
    for j, b in enumerate(runs[0].result["calibration"]["bins"]):
        row = [f"[{b['lo']:.2f}, {b['hi']:.2f})"]
        for r in runs:
            rb = r.result["calibration"]["bins"][j] if j < len(r.result["calibration"]["bins"]) else {}
            row.append(f"{_fmt(rb.get('accuracy'))} <span class=ci>conf {_fmt(rb.get('confidence'))}, "
                       f"n={rb.get('count', 0)}</span>")
        rows.append(row)
    parts.append(_table(["confidence bin", *labels], rows))
    parts += ["<h2>Length: is the model counting characters?</h2>", _img(images["length"])]
    rows = []
    for j, b in enumerate(runs[0].result["length"]["buckets"]):
        rows.append([html.escape(_bucket_label(b)), str(b["count"]), _fmt(b["length_baseline_accuracy"])]
                    + [_fmt(r.result["length"]["buckets"][j]["accuracy"], r.result["length"]["buckets"][j].get("accuracy_ci"))
                       for r in runs])
    parts.append(_table(["len(better) − len(worse), chars", "pairs", "longer wins", *labels], rows))
    if "three_way" in images:
        parts += ["<h2>Ties and 3-way agreement</h2>",
                  "<p>The model calls a pair tied when |σ(Δr) − ½| &lt; t; rate-matched t gives the model as many "
                  "ties as the annotators gave.</p>", _img(images["three_way"])]
    parts.append("<h2>Provenance</h2>")
    for run in runs:
        keep = {k: run.result.get(k) for k in ("model", "scorer", "data", "bootstrap", "eval_config", "section_map")
                if k in run.result}
        parts.append(f"<details><summary>{html.escape(run.label)}</summary><pre>"
                     f"{html.escape(json.dumps(keep, indent=2))}</pre></details>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f"<p><img alt='{html.escape(path.stem)}' src='data:image/png;base64,{data}'></p>"


def write_report(inputs: list[str | Path], output_dir: str | Path | None = None) -> Path:
    """Write the PNGs and ``report.html`` for one or more eval results; returns the HTML path."""
    if not inputs:
        raise UserError("no eval results given")
    runs = [load_eval(s) for s in inputs]
    _unique_labels(runs)
    out = Path(output_dir) if output_dir else runs[0].path.parent / "report"
    out.mkdir(parents=True, exist_ok=True)
    images = {
        "accuracy": plot_accuracy(runs, out / "accuracy.png"),
        "reliability": plot_reliability(runs, out / "reliability.png"),
        "length": plot_length(runs, out / "length.png"),
        "histograms": plot_histograms(runs, out / "reward_histograms.png"),
    }
    three_way = plot_three_way(runs, out / "three_way.png")
    if three_way:
        images["three_way"] = three_way
    page = out / "report.html"
    page.write_text(render_html(runs, images))
    return page
