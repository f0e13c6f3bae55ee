"""The evaluation report: DIR/report.json, DIR/report.md and DIR/<suite>.png (one bar per checkpoint
for every metric, 95% bootstrap CI as error bars). Checkpoints side by side in every table."""
from __future__ import annotations

import json
import os
from pathlib import Path

SHARE_METRICS = ("reply_emotion_named", "reply_emotion_match")  # objective metrics that are 0/1 per item
KIND_TITLES = {"judge": "Judged (rubric scores)", "exact": "Exact (multiple choice, 1 right / 0 wrong)",
               "think": "Think chain vs the query's labels (1 right / 0 wrong)",
               "objective": "Objective checks of the spoken reply (no judge)"}


def _cell(m: dict | None) -> str:
    if m is None:
        return "-"
    if m["mean"] is None:
        return f"n/a (n=0, invalid {m['invalid']})"
    ci = f" [{m['ci95'][0]:.3f}, {m['ci95'][1]:.3f}]" if m["ci95"] else ""
    return f"{m['mean']:.3f}{ci} (n={m['count']}, invalid {m['invalid']})"


def format_markdown(report: dict) -> str:
    judge = report.get("judge")
    labels = list(report["checkpoints"])
    lines = [f"# {report['suite']} evaluation", "",
             f"- data: `{report['data']}` ({report['items']} items)",
             f"- judge: {judge['model']} at {judge['base_url']} (temperature {judge['temperature']}, "
             f"seed {judge['seed']}; calls {judge['stats']['calls']}, cached {judge['stats']['cache_hits']}, "
             f"retries {judge['stats']['retries']})" if judge else "- judge: none (objective checks only)",
             f"- scorer of the reply audio: {report['scorer']}",
             "- cells: mean [95% bootstrap CI] (n scored, invalid = meant to be scored but unreadable)", ""]
    for label in labels:
        c = report["checkpoints"][label]
        lines.append(f"- `{label}`: {c['checkpoint']}: decoded {c['decoded']}/{report['items']}"
                     + (f", not decoded {c['not_decoded']} ({', '.join(f'{k} {v}' for k, v in c['failed'].items())})"
                        if c["not_decoded"] else ""))
    for kind, title in KIND_TITLES.items():
        names = sorted({n for c in report["checkpoints"].values() for n in c["metrics"].get(kind, {})})
        if not names:
            continue
        lines += ["", f"## {title}", "", "| metric | " + " | ".join(f"`{x}`" for x in labels) + " |",
                  "|---" * (len(labels) + 1) + "|"]
        for name in names:
            lines.append(f"| {name} | " + " | ".join(_cell(report["checkpoints"][x]["metrics"].get(kind, {}).get(name))
                                                    for x in labels) + " |")
    return "\n".join(lines) + "\n"


def short_labels(labels: list) -> list:
    """Checkpoint labels without the parts they all share ("stage3_tag_think_final",
    "stage3_language_think_final" -> "tag", "language"), for the chart's axis."""
    parts = [x.split("_") for x in labels]
    if len(labels) < 2:
        return labels
    head = 0
    while all(len(p) > head + 1 and p[head] == parts[0][head] for p in parts):
        head += 1
    tail = 0
    while all(len(p) > head + tail + 1 and p[-1 - tail] == parts[0][-1 - tail] for p in parts):
        tail += 1
    short = ["_".join(p[head:len(p) - tail]) for p in parts]
    return short if len(set(short)) == len(short) else labels


def plot(report: dict, path: str) -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(report["checkpoints"])
    panels = [(kind, name) for kind in KIND_TITLES
              for name in sorted({n for c in report["checkpoints"].values() for n in c["metrics"].get(kind, {})})]
    if not panels:
        return None
    cols = min(4, len(panels))
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.8 * rows), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (kind, name) in zip(axes.flat, panels):
        for i, label in enumerate(labels):
            m = report["checkpoints"][label]["metrics"].get(kind, {}).get(name)
            if not m:
                continue
            if m["mean"] is None:  # nothing valid to draw: say so where the bar would be
                ax.text(i, 0.5, f"no valid score\n{m['invalid']} invalid", ha="center", va="center", fontsize=7,
                        color="firebrick", transform=ax.get_xaxis_transform())
                continue
            err = [[m["mean"] - m["ci95"][0]], [m["ci95"][1] - m["mean"]]] if m["ci95"] else None
            ax.bar(i, m["mean"], yerr=err, capsize=3, color=colors[i % len(colors)], label=label)
            ax.text(i, m["mean"], f"n={m['count']}" + (f"\ninv {m['invalid']}" if m["invalid"] else ""),
                    ha="center", va="bottom", fontsize=6)
        ax.set_title(f"{kind}: {name}", fontsize=8)
        ax.set_xticks(range(len(labels)), short_labels(labels), fontsize=7)
        ax.set_xlim(-0.6, len(labels) - 0.4)
        if kind in ("exact", "think") or name in SHARE_METRICS:
            ax.set_ylim(0, 1.05)
        else:
            ax.set_ylim(bottom=0)
        ax.tick_params(axis="y", labelsize=6)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    judge = report.get("judge")
    fig.suptitle(f"{report['suite']}: {report['items']} items, judge "
                 f"{judge['model'] if judge else 'none'}; bars: mean, 95% bootstrap CI", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write(report: dict, out_dir: str) -> dict:
    """Write report.json, report.md and the chart; returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    chart = plot(report, os.path.join(out_dir, f"{report['suite']}.png"))
    report["chart"] = os.path.basename(chart) if chart else None
    paths = {"json": os.path.join(out_dir, "report.json"), "md": os.path.join(out_dir, "report.md"), "chart": chart}
    for key, text in (("json", json.dumps(report, ensure_ascii=False, indent=1) + "\n"), ("md", format_markdown(report))):
        tmp = paths[key] + ".tmp"
        Path(tmp).write_text(text, encoding="utf-8")
        os.replace(tmp, paths[key])
    return paths
