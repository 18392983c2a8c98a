"""Quality-cost curves of routers against the single models (matplotlib, Agg backend).

``refs`` for :func:`plot_curves` is the dict :func:`make_refs` builds:
``{"single_points": [m, 2], "model_ids": [m], "ref_idx": int, "cheap_idx": int}``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ipr_model.evaluation.quality_cost import (
    arqgc,
    reference_and_cheapest,
    saving_at_parity,
    single_model_points,
    upper_hull,
)

N_LABELLED = 3  # besides the reference and the cheapest, label this many best single models


def make_refs(true_q: np.ndarray, true_cost: np.ndarray, model_ids: Sequence[str]) -> dict:
    r = reference_and_cheapest(true_q, true_cost)
    return {
        "single_points": single_model_points(true_q, true_cost),
        "model_ids": list(model_ids),
        "ref_idx": r.ref_idx,
        "cheap_idx": r.cheap_idx,
    }


def _legend_label(
    name: str, pts: np.ndarray, c_ch: float, q_ch: float, c_ref: float, q_ref: float
) -> str:
    score = arqgc(pts, c_ch, q_ch, c_ref, q_ref)
    sp = saving_at_parity(pts, c_ref, q_ref)
    if sp["reached"]:
        parity = f"saving at parity {sp['saving']:.1%}"
    else:
        parity = f"parity not reached (max Q {sp['max_quality']:.3f})"
    return f"{name}: ARQGC {score:.3f}, {parity}"


def plot_curves(
    routers: Mapping[str, np.ndarray],
    refs: Mapping,
    title: str,
    out_png: str | Path,
) -> Path:
    """Plot each router's operating points (a line in tau order) over the single models.

    Adds the random mix of single models (their upper hull, dashed grey), a dashed line at Q_ref,
    labels for the reference, the cheapest and the best few single models, and a legend with every
    router's ARQGC and saving at parity. The cost axis is logarithmic when costs span > 20x.
    Writes ``out_png`` at 150 dpi and returns its path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    single = np.asarray(refs["single_points"], dtype=np.float64)
    ids = list(refs["model_ids"])
    ri, ci = int(refs["ref_idx"]), int(refs["cheap_idx"])
    c_ref, q_ref = single[ri]
    c_ch, q_ch = single[ci]

    fig, ax = plt.subplots(figsize=(10, 6.5), dpi=150)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    _plot_routers(ax, routers, colors, c_ch, q_ch, c_ref, q_ref)
    _plot_single_models(ax, single, c_ch, q_ch, c_ref, q_ref)
    _scale_cost_axis(ax, single, routers)
    _label_single_models(ax, single, ids, ri, ci)
    _decorate(ax, title)
    fig.tight_layout()
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=150)
    plt.close(fig)
    return out


def _plot_routers(
    ax, routers: Mapping[str, np.ndarray], colors: Sequence[str],
    c_ch: float, q_ch: float, c_ref: float, q_ref: float,
) -> None:
    """Each router: a line through its operating points, or a diamond when it has one."""
    for i, (name, pts) in enumerate(routers.items()):
        p = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
        label = _legend_label(name, p, c_ch, q_ch, c_ref, q_ref)
        style = dict(color=colors[i % len(colors)], label=label, zorder=3)
        if len(p) == 1:
            ax.plot(p[:, 0], p[:, 1], marker="D", markersize=8, linestyle="none", **style)
        else:
            ax.plot(p[:, 0], p[:, 1], marker="o", markersize=2.5, linewidth=1.6, **style)


def _plot_single_models(
    ax, single: np.ndarray, c_ch: float, q_ch: float, c_ref: float, q_ref: float
) -> None:
    """The single models, their random mix (the upper hull) and the reference quality line."""
    hull = upper_hull(single)
    ax.plot(
        hull[:, 0], hull[:, 1], color="0.5", linestyle="--", linewidth=1.2, zorder=2,
        label=_legend_label("random mix of single models", single, c_ch, q_ch, c_ref, q_ref),
    )
    ax.scatter(single[:, 0], single[:, 1], s=28, color="0.25", zorder=4, label="single models")
    ax.axhline(q_ref, color="crimson", linestyle="--", linewidth=1.0, zorder=1,
               label=f"reference quality Q_ref = {q_ref:.3f}")


def _scale_cost_axis(ax, single: np.ndarray, routers: Mapping[str, np.ndarray]) -> None:
    """A logarithmic cost axis when the positive costs span more than 20x, else a linear one."""
    router_costs = [np.asarray(p, np.float64).reshape(-1, 2)[:, 0] for p in routers.values()]
    costs = np.concatenate([single[:, 0], *router_costs])
    costs = costs[costs > 0]
    if len(costs) and costs.max() / costs.min() > 20:
        ax.set_xscale("log")
    else:
        ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 3))
    ax.margins(x=0.06, y=0.06)


def _label_single_models(ax, single: np.ndarray, ids: Sequence[str], ri: int, ci: int) -> None:
    """Label the reference, the cheapest and the N_LABELLED best single models not crowded out."""
    to_axes = ax.transData + ax.transAxes.inverted()
    pos = to_axes.transform(single)
    labelled = {ri: "reference", ci: "cheapest"}
    for j in np.argsort(-single[:, 1], kind="stable"):
        if len(labelled) >= 2 + N_LABELLED:
            break
        crowded = min(np.hypot(*(pos[j] - pos[i])) for i in labelled) < 0.08
        if not crowded:  # skip a label that would sit on top of another
            labelled.setdefault(int(j), "")
    for j, role in labelled.items():
        text = f"{ids[j]} ({role})" if role else ids[j]
        right_half = to_axes.transform(single[j])[0] > 0.6  # keep the label inside the axes
        ax.annotate(
            text, single[j], xytext=(-6 if right_half else 6, 4), textcoords="offset points",
            ha="right" if right_half else "left", fontsize=8,
            color="crimson" if role else "0.2", zorder=5,
        )


def _decorate(ax, title: str) -> None:
    """Axis labels, title, grid and legend."""
    ax.set_xlabel("mean cost per prompt (USD, recorded)", fontsize=11)
    ax.set_ylabel("mean quality (recorded, 0-1)", fontsize=11)
    ax.set_title(title, fontsize=13)
    ax.grid(True, which="major", alpha=0.35)
    ax.grid(True, which="minor", alpha=0.12)
    ax.tick_params(labelsize=9)
    ax.legend(loc="lower right", fontsize=8, framealpha=0.9)
