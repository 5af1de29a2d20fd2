"""Throughput and latency against concurrency, one line per (scenario, encoding, mode)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def series_key(level: dict[str, Any], levels: list[dict[str, Any]]) -> str:
    """The legend label: only the parts that vary across the sweep (all of them if none do)."""
    parts = []
    for field in ("scenario", "encoding", "mode"):
        if len({lv[field] for lv in levels}) > 1:
            parts.append(level[field])
    return " / ".join(parts) or f"{level['scenario']} / {level['encoding']} / {level['mode']}"


def _plain_log_labels(ax) -> None:
    """Tick labels as plain numbers (20, 50, 100) rather than 2×10¹; minor ticks labelled only when
    the axis spans less than two decades."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.yaxis.set_major_formatter(plain)
    lo, hi = ax.get_ylim()
    ax.yaxis.set_minor_formatter(plain if lo > 0 and hi / lo < 100 else NullFormatter())
    ax.tick_params(axis="y", which="minor", labelsize=7)


def title_of(doc: dict[str, Any]) -> str:
    """The figure's title: URL, what was fixed across the sweep, generator, machine."""
    cfg = doc.get("config", {})
    fixed = [", ".join(cfg[k]) for k in ("scenarios", "encodings", "modes") if len(cfg.get(k, [])) == 1]
    return (f"gradserve loadtest {cfg.get('url', '')} ({', '.join(fixed)}): {cfg.get('backend')}, "
            f"{cfg.get('duration')} s/level, "
            + ("closed loop" if not cfg.get("rate") else f"{cfg['rate']:g} req/s")
            + f", {doc.get('machine', {}).get('cpus', '?')} CPUs")


def plot(levels: list[dict[str, Any]], path: str | Path, title: str | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, list[dict[str, Any]]] = {}
    for lv in levels:
        series.setdefault(series_key(lv, levels), []).append(lv)

    fig, (ax_t, ax_l) = plt.subplots(1, 2, figsize=(12, 4.8), constrained_layout=True)
    concs = sorted({lv["concurrency"] for lv in levels})
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (label, pts) in enumerate(series.items()):
        pts = sorted(pts, key=lambda lv: lv["concurrency"])
        x = [lv["concurrency"] for lv in pts]
        color = colors[i % len(colors)]
        ax_t.plot(x, [lv["client"]["ok_rps"] for lv in pts], "o-", color=color, label=label)
        p50 = [lv["client"]["latency_ms"]["p50"] for lv in pts]
        p99 = [lv["client"]["latency_ms"]["p99"] for lv in pts]
        ax_l.plot(x, [float("nan") if v is None else v for v in p50], "o-", color=color,
                  label=f"{label} p50")
        ax_l.plot(x, [float("nan") if v is None else v for v in p99], "s--", color=color,
                  label=f"{label} p99")
        for lv in pts:
            errs = lv["client"]["error_count"]
            if errs:
                ax_t.annotate(f"{errs} err", (lv["concurrency"], lv["client"]["ok_rps"]),
                              textcoords="offset points", xytext=(4, 6), fontsize=8, color=color)

    for ax in (ax_t, ax_l):
        if len(concs) > 1 and concs[-1] / max(concs[0], 1) >= 4:
            ax.set_xscale("log", base=2)
        ax.set_xticks(concs)
        ax.set_xticklabels([str(c) for c in concs])
        ax.set_xlabel("concurrency (users / workers)")
        ax.grid(True, which="both", alpha=0.3)
    ax_t.set_ylabel("throughput (successful requests/s)")
    rps = [lv["client"]["ok_rps"] for lv in levels if lv["client"]["ok_rps"] > 0]
    if rps and max(rps) / min(rps) > 30:  # e.g. the tutorial next to the MLP: both stay visible
        ax_t.set_yscale("log")
    else:
        ax_t.set_ylim(bottom=0)
    ax_t.set_title("Throughput")
    ax_l.set_ylabel("latency (ms)")
    ax_l.set_yscale("log")
    _plain_log_labels(ax_l)
    if ax_t.get_yscale() == "log":
        _plain_log_labels(ax_t)
    ax_l.set_title("Latency: p50 (solid), p99 (dashed)")
    ax_t.legend(fontsize=8)
    ax_l.legend(fontsize=8, ncol=1 if len(series) < 3 else 2)
    if title:
        fig.suptitle(title, fontsize=10)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
