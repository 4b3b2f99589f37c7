"""Pareto plots of the variants: quality against size and against decode speed, the champion marked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from slmops.metrics import METRICS, interval, resolved

QUALITY_METRICS = ("exact_match", "top1_agreement", "token_f1")


def quality_metric(rows: list[dict]) -> str | None:
    """The quality metric to plot: the first every variant has that tells them apart, else the first they have."""
    have = [m for m in QUALITY_METRICS if rows and all(m in r["metrics"] for r in rows)]
    varying = [m for m in have if len({r["metrics"][m] for r in rows}) > 1]
    return (varying or have or [None])[0]


def pareto_front(points: list[tuple[float, float]], x_goal: str, y_goal: str) -> list[int]:
    """Indexes of the points no other point beats on both axes."""
    def better_or_equal(a: float, b: float, goal: str) -> bool:
        return a <= b if goal == "minimize" else a >= b

    front = []
    for i, (xi, yi) in enumerate(points):
        dominated = any(
            better_or_equal(xj, xi, x_goal) and better_or_equal(yj, yi, y_goal) and (xj, yj) != (xi, yi)
            for j, (xj, yj) in enumerate(points) if j != i
        )
        if not dominated:
            front.append(i)
    return front


def pareto_plot(rows: list[dict], x_metric: str, y_metric: str, champion: str | None, path: Path,
                title: str) -> Path | None:
    """One scatter plot of the variants that have both metrics; None when fewer than one has them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    have = [r for r in rows if x_metric in r["metrics"] and y_metric in r["metrics"]]
    if not have:
        return None
    xs = [r["metrics"][x_metric] / (1e6 if x_metric == "size_bytes" else 1) for r in have]
    ys = [r["metrics"][y_metric] for r in have]
    front = pareto_front(list(zip(xs, ys)), METRICS[x_metric][0], METRICS[y_metric][0])
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=110)
    xerr = _error_bars(have, x_metric)
    if xerr is not None:  # the 95 % interval of a timed figure's median
        ax.errorbar(xs, ys, xerr=xerr, fmt="none", ecolor="#4c72b0", elinewidth=1, capsize=3, zorder=2)
    ax.scatter(xs, ys, color="#4c72b0", zorder=3, label="variant")
    ordered = sorted(front, key=lambda i: xs[i])
    ax.plot([xs[i] for i in ordered], [ys[i] for i in ordered], color="#dd8452", linestyle="--", zorder=2,
            label="Pareto front")
    for r, x, y in zip(have, xs, ys):
        ax.annotate(r["name"], (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
        if r["name"] == champion:
            ax.scatter([x], [y], s=260, facecolors="none", edgecolors="#c44e52", linewidths=2, zorder=4,
                       label="champion")
    ax.set_xlabel("size (MB)" if x_metric == "size_bytes" else x_metric)
    ax.set_ylabel(y_metric)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def _error_bars(rows: list[dict], metric: str) -> list[list[float]] | None:
    """Below and above each point, its interval (None when no row has one)."""
    bounds = [interval(metric, r["metrics"]) for r in rows]
    if not any(bounds):
        return None
    below = [r["metrics"][metric] - b[0] if b else 0.0 for r, b in zip(rows, bounds)]
    above = [b[1] - r["metrics"][metric] if b else 0.0 for r, b in zip(rows, bounds)]
    return [[max(v, 0.0) for v in below], [max(v, 0.0) for v in above]]


def sweep_plots(doc: dict[str, Any], out_dir: Path) -> dict[str, str]:
    """The sweep's Pareto plots under out_dir/plots: {title: path relative to out_dir}."""
    rows = [{"name": v["name"], "metrics": {**v["metrics"], "size_bytes": v["size_bytes"]}}
            for v in doc["variants"] if v["status"] != "failed" and v["size_bytes"]]
    champion = ((doc.get("decision") or {}).get("champion") or {}).get("name")
    quality = quality_metric(rows)
    made: dict[str, str] = {}
    if not quality:
        return made
    # a decode speed the timer could not resolve is no fact to plot
    timed = [r for r in rows if resolved("decode_tokens_per_s", r["metrics"])]
    for x_metric, file, title, points in (
            ("size_bytes", "pareto_size.png", f"{quality} against size", rows),
            ("decode_tokens_per_s", "pareto_speed.png", f"{quality} against decode speed (95 % intervals)", timed)):
        if pareto_plot(points, x_metric, quality, champion, out_dir / "plots" / file, title):
            made[title] = f"plots/{file}"
    title = "Decode speed against bytes per token, with the roofs"
    if roofline_plot(doc, out_dir / "plots" / "roofline.png", title):
        made[title] = "plots/roofline.png"
    return made


def roofline_plot(doc: dict[str, Any], path: Path, title: str) -> bool:
    """Each variant's decode tok/s (95 % interval) against the weight bytes a token reads, under the memory roof
    (tok/s = bandwidth / bytes) and the kernel roof of each weight format. False when nothing can be plotted."""
    roofs = doc.get("roofline")
    points = [v for v in doc["variants"] if v["status"] != "failed" and "achieved_gb_per_s" in v["metrics"]]
    if not roofs or not points:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    xs = [v["metrics"]["bytes_per_token"] / 1e9 for v in points]
    span = np.geomspace(min(xs) / 2, max(xs) * 2, 50)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(span, roofs["memory"]["gb_per_s"] / span, "k-", label=f"memory roof {roofs['memory']['gb_per_s']:.0f} GB/s")
    for key, kernel in (roofs.get("kernels") or {}).items():
        if kernel and key != "MatMul-32bit":
            ax.plot(span, kernel["gb_per_s"] / span, "--", label=f"{key} {kernel['gb_per_s']:.0f} GB/s")
    for v in points:
        m = v["metrics"]
        bounds = interval("decode_tokens_per_s", m)
        err = [[m["decode_tokens_per_s"] - bounds[0]], [bounds[1] - m["decode_tokens_per_s"]]] if bounds else None
        ax.errorbar([m["bytes_per_token"] / 1e9], [m["decode_tokens_per_s"]], yerr=err, fmt="o", capsize=3)
        ax.annotate(v["name"], (m["bytes_per_token"] / 1e9, m["decode_tokens_per_s"]), textcoords="offset points",
                    xytext=(5, 5), fontsize=8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("GB of weights read per token")
    ax.set_ylabel("decode tok/s")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
