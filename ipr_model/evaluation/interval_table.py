"""``ipr evaluate``'s table of bootstrap intervals (the ``intervals`` and ``p_ipr_beats`` keys of
its report, ``ipr_model.evaluation.bootstrap``)."""

from __future__ import annotations

from ipr_model.evaluation.bootstrap import COST_SHARES, LEVEL

NOT_REACHED = "n.r."


def _pct(v: float | None) -> str:
    return NOT_REACHED if v is None else f"{v:.1%}"


def cell(iv: dict, percent: bool) -> str:
    """'point [lo, hi]'; an unreached value (None) reads ``n.r.``."""
    from rich.markup import escape  # "[n.r., ...]" would otherwise read as a style tag

    fmt = _pct if percent else (lambda v: "-" if v is None else f"{v:.3f}")
    return escape(f"{fmt(iv['point'])} [{fmt(iv['lo'])}, {fmt(iv['hi'])}]")


def print_intervals(rep: dict) -> None:
    """One row per method: ARQGC, steps, the cost shares, saving at parity (each with its
    interval) and P(ipr beats it) on ARQGC and on the cost share at 95%."""
    from rich.console import Console
    from rich.table import Table

    boot = rep["bootstrap"]
    t = Table(title=f"{LEVEL:g}% intervals: paired bootstrap over prompts, {boot['resamples']} "
                    f"resamples, seed {boot['seed']} ({NOT_REACHED}: quality not reached)")
    shares = [k.removeprefix("cost_share_") for k in COST_SHARES]
    for col in ("method", "ARQGC", "steps", *(f"cost @{float(f):.1%} Q_ref" for f in shares),
                "saving at parity", "P(ipr beats): ARQGC", "cost @95%"):
        t.add_column(col, justify="left" if col == "method" else "right")
    for name, iv in rep["intervals"].items():
        p = rep["p_ipr_beats"].get(name)
        t.add_row(name, cell(iv["arqgc"], False), cell(iv["arqgc_steps"], False),
                  *(cell(iv[k], True) for k in COST_SHARES), cell(iv["saving_at_parity"], True),
                  "-" if p is None else f"{p['arqgc']:.3f}",
                  "-" if p is None else f"{p['cost_share_0.95']:.3f}")
    Console(width=220).print(t)


def print_pair(pair: dict) -> None:
    """Routing between two models: ipr's figures under the pair rule and under the range rule
    (a switch), with their intervals when the report has them."""
    from rich.console import Console
    from rich.table import Table

    a, b = pair["models"]
    t = Table(title=f"two models only: {a} and {b}")
    for col in ("rule", "router", "ARQGC", "cost @95% Q_ref", "cost @97.5% Q_ref",
                "operating points"):
        t.add_column(col, justify="left" if col in ("rule", "router") else "right")
    for variant in ("ipr", "range"):
        rep = pair[variant]
        for name, r in rep["routers"].items():
            if name not in ("ipr", "oracle"):
                continue
            iv = rep.get("intervals", {}).get(name)
            points = len({(round(p[1], 12), round(p[2], 12)) for p in r["points"]})
            if iv:
                cells = [cell(iv["arqgc"], False), cell(iv["cost_share_0.95"], True),
                         cell(iv["cost_share_0.975"], True)]
            else:
                cells = [f"{r['arqgc']:.3f}", _pct(r["cost_share"]["0.95"]),
                         _pct(r["cost_share"]["0.975"])]
            t.add_row(variant, name, *cells, str(points))
    Console(width=220).print(t)
