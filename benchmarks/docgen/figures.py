"""The learning-curve plots of the comparison: docs/figures/curves-<use case>.png, the metric on
validation devices against device updates and against fleet energy."""

from __future__ import annotations

from pathlib import Path


def curve_figure(doc: dict, figures: Path) -> Path:
    """Write the learning curves of a bench document into `figures`; returns the file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10.4, 3.4))
    for name, a in doc["algorithms"].items():
        curve = a["curve"]
        ys = [p["metric"] for p in curve]
        if name == "no_federation":
            for ax in axes:
                ax.axhline(ys[0], color="grey", linestyle=":", label=name)
            continue
        axes[0].plot([p["updates"] for p in curve], ys, label=name)
        axes[1].plot([p["fleet_energy_mj"] for p in curve], ys, label=name)
    for ax, xlabel in zip(axes, ("device updates", "fleet energy (mJ)"), strict=True):
        ax.axhline(doc["target"], color="black", linewidth=0.5)
        ax.set_xlabel(xlabel, fontsize=9)
        ax.set_ylabel("%s (validation)" % doc["metric"], fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(
        "%s: mean over seeds %s" % (doc["use_case"], ",".join(map(str, doc["seeds"]))),
        fontsize=10,
    )
    fig.tight_layout()
    figures.mkdir(parents=True, exist_ok=True)
    path = figures / ("curves-%s.png" % doc["use_case"])
    fig.savefig(path, dpi=90, metadata={"Software": None})
    plt.close(fig)
    return path
