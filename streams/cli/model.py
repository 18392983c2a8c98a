"""The estimator's commands: train, add-model, score, evaluate, route, recalibrate.

`streams.cli.main` mounts them in the `ipr` command beside the services'; this module imports
nothing
of `streams` (``python -m streams.cli.model`` runs them alone). Heavy imports live inside the
commands; user mistakes end in a one-line error and exit code 2 (``streams.cli.console``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from streams.cli.console import (
    DEFAULT_ARTIFACTS,
    ArtifactsOpt,
    DatasetOpt,
    UserError,
    command,
    configure,
    print_table,
    progress_bar,
    write_json,
)

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="IPR quality estimators: train, evaluate, route offline.")
app.callback()(configure)


def _load(dataset: Path):
    from ipr_model.training.datasets import load_dataset

    return load_dataset(dataset)


LayersOpt = Annotated[
    str | None,
    typer.Option(help="encoder hidden layers pooled into the embedding, e.g. 2,4,6 "
                      "(default: the last one, the sentence embedding)"),
]


TailOpt = Annotated[
    int | None,
    typer.Option(help="keep a long prompt's last N tokens after as much of its head as fits (0: "
                      "the head only). Default: the head, or, when 10%+ of the train prompts are "
                      "cut, whichever of the head and the first and last 128 routes them better"),
]


def _layers(text: str | None) -> tuple[int, ...] | None:
    try:
        return tuple(int(x) for x in text.split(",")) if text else None
    except ValueError:
        raise UserError(f"--layers must be comma-separated layer numbers, got {text!r}") from None


INDEX_CHOICES = {"auto": None, "always": True, "never": False}


@app.command()
@command
def train(
    dataset: DatasetOpt,
    out: Annotated[Path, typer.Option("--out", "-o", help="artifact directory to write")],
    encoder: Annotated[
        Path | None, typer.Option(help="a local Hugging Face model directory")
    ] = None,
    precision: Annotated[
        str, typer.Option(help="encoder weights: int8 (faster) or fp32 (the exported graph as is)")
    ] = "int8",
    layers: LayersOpt = None,
    tail_tokens: TailOpt = None,
    seed: Annotated[int, typer.Option(help="seed of the MLP folds and initial weights")] = 0,
    knn_index: Annotated[
        str, typer.Option(help="the kNN memory's ANN index: auto (when the memory has 20,000 "
                          "rows or more), always or never")
    ] = "auto",
) -> None:
    """Train the estimators on the dataset's train split and write an artifact directory."""
    import time

    from ipr_model.training.fitting import AdapterConfig
    from ipr_model.training.train import train as run

    if knn_index not in INDEX_CHOICES:
        raise UserError(f"--knn-index must be one of {', '.join(INDEX_CHOICES)}, got {knn_index!r}")
    t0 = time.perf_counter()
    pooled = _layers(layers)
    train_set = _load(dataset).split("train")
    with progress_bar() as cb:
        manifest = run(train_set, out, encoder_source=encoder, cfg=AdapterConfig(seed=seed),
                       progress=cb, encoder_precision=precision, encoder_layers=pooled,
                       encoder_tail_tokens=tail_tokens, knn_index=INDEX_CHOICES[knn_index])
    typer.echo(
        f"trained {len(manifest.models)} adapters on {len(train_set)} prompts in "
        f"{time.perf_counter() - t0:.1f}s: {out} (version {manifest.version})"
    )
    cut = manifest.data.get("train_prompts_cut", 0)
    if cut:
        from ipr_model.artifacts.manifest import ENCODER_DIR
        from ipr_model.serving.encoder import encoder_config

        tail = encoder_config(out / ENCODER_DIR).get("tail_tokens", 0)
        keep = f"their last {tail} tokens after the head that fits" if tail else "their head"
        scores = manifest.data.get("cut_scores")
        why = (" (routing the train split out of fold, by tail tokens: " + ", ".join(
            f"{t}: {s:.4f}" for t, s in scores.items()) + ")") if scores else ""
        typer.echo(f"{cut} of {len(train_set)} train prompts are longer than the encoder's "
                   f"window: the encoder keeps {keep}{why}")


@app.command("add-model")
@command
def add_model(
    artifacts: ArtifactsOpt,
    dataset: DatasetOpt,
    model: Annotated[str, typer.Option("--model", "-m", help="model id in the dataset")],
    prices_only: Annotated[bool, typer.Option(
        "--prices-only", help="only its prices from models.json, no outcomes: an onboarding "
        "card that exploration and feedback train (IPR_ROUTER_EXPLORE_SHARE)")] = False,
) -> None:
    """Train one more model's adapter into existing artifacts; other files stay byte-identical."""
    import time

    from ipr_model.training.train import add_model as run

    t0 = time.perf_counter()
    if prices_only:
        from ipr_model.errors import DatasetError
        from ipr_model.training.datasets import load_models
        from ipr_model.training.onboard import add_prices_only

        infos = {m.id: m for m in load_models(Path(dataset) / "models.json")[1]}
        if model not in infos:
            raise DatasetError(f"{model!r} is not in {dataset}/models.json")
        manifest = add_prices_only(artifacts, infos[model])
        typer.echo(f"added {model} (onboarding, prices only): {len(manifest.models)} models, "
                   f"version {manifest.version}")
        return
    train_set = _load(dataset).split("train")
    with progress_bar() as cb:
        manifest = run(artifacts, train_set, model, progress=cb)
    typer.echo(
        f"added {model} in {time.perf_counter() - t0:.1f}s: {len(manifest.models)} models, "
        f"version {manifest.version}"
    )


@app.command()
@command
def score(
    artifacts: ArtifactsOpt,
    dataset: DatasetOpt,
    out: Annotated[Path, typer.Option("--out", "-o", help="JSONL file to write")],
    split: Annotated[str, typer.Option(help="train or test")] = "test",
) -> None:
    """Predicted quality and estimated cost of every model for every prompt of a split."""
    import orjson

    from ipr_model.serving.scorer import Scorer
    from ipr_model.training.train import embed

    scorer = Scorer.load(artifacts)
    part = _load(dataset).split(split)
    with progress_bar() as cb:
        emb = embed(Path(artifacts) / "encoder", part.prompts, cb)
    s = scorer.score_embeddings(emb, part.prompts)
    out.parent.mkdir(parents=True, exist_ok=True)
    ids = scorer.model_ids
    with open(out, "wb") as f:
        for i, pid in enumerate(part.ids):
            row = {
                "id": pid,
                "predicted_quality": dict(zip(ids, s.quality[i].tolist(), strict=True)),
                "estimated_cost_usd": dict(zip(ids, s.cost[i].tolist(), strict=True)),
            }
            f.write(orjson.dumps(row) + b"\n")
    typer.echo(f"scored {len(part)} prompts x {len(scorer.model_ids)} models: {out}")


def _pair(spec: str, model_ids: list[str]) -> tuple[str, str] | None:
    if spec == "auto":
        return None
    names = tuple(m.strip() for m in spec.split(","))
    unknown = [m for m in names if m not in model_ids]
    if len(names) != 2 or len(set(names)) != 2 or unknown:
        raise UserError(f"--pair takes 'auto' or two different models of the dataset as A,B; "
                        f"got {spec!r}" + (f" (unknown: {', '.join(unknown)})" if unknown else ""))
    return names[0], names[1]


@app.command()
@command
def evaluate(
    dataset: DatasetOpt,
    json_out: Annotated[Path, typer.Option("--json", help="JSON report to write")],
    artifacts: Annotated[
        Path | None,
        typer.Option("--artifacts", "-a", help="trained artifacts (held-out split)"),
    ] = None,
    split: Annotated[str, typer.Option(help="split to measure on")] = "test",
    cv: Annotated[
        int, typer.Option(help="k-fold cross-validation instead of artifacts (k >= 2)")
    ] = 0,
    plot: Annotated[Path | None, typer.Option(help="PNG of the quality-cost curves")] = None,
    layers: LayersOpt = None,
    tail_tokens: TailOpt = None,
    seed: Annotated[int, typer.Option(help="with --cv: seed of the folds and of the MLPs")] = 0,
    resamples: Annotated[
        int, typer.Option(help="bootstrap resamples of the prompts for the intervals (0: none)")
    ] = 1000,
    bootstrap_seed: Annotated[int, typer.Option(help="seed of the bootstrap resamples")] = 0,
    pair: Annotated[str | None, typer.Option(
        help="also route between two models only: 'auto' (the reference and the cheapest) or "
             "'MODEL_A,MODEL_B'")] = None,
) -> None:
    """Routing quality (ARQGC, cost share at 95-100% of the reference's quality, saving at
    parity, ...) against the baselines, with paired-bootstrap intervals."""
    from ipr_model.evaluation import evaluate as ev
    from ipr_model.evaluation import quality_cost as metrics
    from ipr_model.evaluation.plot import make_refs, plot_curves
    from ipr_model.training.fitting import AdapterConfig

    if resamples < 0:
        raise UserError(f"--resamples must be >= 0 (0: no intervals), got {resamples}")
    data = _load(dataset)
    with progress_bar() as cb:
        if cv:
            if cv < 2:
                raise UserError(f"--cv must be >= 2, got {cv}")
            rep, preds, cost, test = ev.cross_validate(
                data, folds=cv, cfg=AdapterConfig(seed=seed), seed=seed, progress=cb,
                layers=_layers(layers), tail_tokens=tail_tokens,
            )
        else:
            if layers or seed or tail_tokens is not None:
                raise UserError("--layers, --tail-tokens and --seed apply to --cv "
                                "(artifacts carry their own)")
            if artifacts is None:
                raise UserError(
                    "give --artifacts (held-out evaluation) or --cv K (cross-validation)"
                )
            if not data.has_split(split):
                raise UserError(f"dataset {data.name!r} has no {split!r} split: use --cv 5")
            rep, preds, cost = ev.evaluate_split(artifacts, data, split, progress=cb)
            from ipr_model.serving.scorer import Scorer

            test = data.split(split).restrict(Scorer.load(artifacts, verify=False).model_ids)
    if resamples:
        rep = ev.with_intervals(rep, test, cost, preds, resamples, bootstrap_seed)
    if pair:
        rep["pair"] = ev.pair_report(test, cost, preds, _pair(pair, test.model_ids), resamples,
                                     bootstrap_seed)
    write_json(json_out, rep)
    _print_evaluation(rep)
    if plot:
        ids = test.model_ids
        curves = {
            name: metrics.operating_points(p, cost, test.quality, test.cost, ids)
            for name, p in preds.items()
        }
        plot_curves(curves, make_refs(test.quality, test.cost, ids),
                    f"{rep['dataset']}: {rep['split']}", plot)
        typer.echo(f"plot: {plot}")
    typer.echo(f"report: {json_out}")


def _print_evaluation(rep: dict) -> None:
    from ipr_model.evaluation.interval_table import print_intervals, print_pair

    print_table(rep)
    if "intervals" in rep:
        print_intervals(rep)
        typer.echo(f"bootstrap: {rep['bootstrap']['seconds']:.1f}s")
    for name in ("ipr", "linear", "knn"):
        per = [f[name]["saving_at_parity"] for f in rep.get("per_fold", []) if name in f]
        if per:
            typer.echo(f"{name}, each fold on its own: saving at parity " + ", ".join(
                f"{p['saving']:.1%}" if p["reached"] else "not reached" for p in per))
    if "pair" in rep:
        print_pair(rep["pair"])
    if any(rep.get("tail_tokens_per_fold", [])):
        typer.echo(
            f"the cut each fold chose (tail tokens, 0: the head): {rep['tail_tokens_per_fold']}"
        )


@app.command()
@command
def route(
    text: Annotated[str, typer.Argument(help="the prompt")],
    artifacts: ArtifactsOpt = DEFAULT_ARTIFACTS,
    tolerance: Annotated[float, typer.Option("--tolerance", "-t", help="tau in [0, 1]")] = 0.2,
    allow: Annotated[
        list[str] | None, typer.Option("--allow", help="restrict to these model ids")
    ] = None,
    variant: Annotated[str, typer.Option(help="ipr, range or dynamic_max")] = "ipr",
    delta: Annotated[float, typer.Option(help="margin of dynamic_max")] = 0.0,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Route one prompt: the chosen model, every model's score and cost, and the threshold."""
    from ipr_model.serving.candidates import allowed_mask
    from ipr_model.serving.decision import decide
    from ipr_model.serving.rule import VARIANTS, check_tolerance
    from ipr_model.serving.scorer import Scorer

    if not text.strip():
        raise UserError("the prompt is empty: expected non-empty text")
    check_tolerance(tolerance)
    if variant not in VARIANTS:
        raise UserError(f"--variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    scorer = Scorer.load(artifacts)
    allowed_mask(scorer.model_ids, allow)  # unknown ids: a clear error before any work
    d = decide(scorer, scorer.score([text]), [tolerance], [allow], variant=variant,
               delta=delta)[0]
    if as_json:
        typer.echo(json.dumps({"model_id": d.model_id, "threshold": d.threshold,
                               "tolerance": d.tolerance, "rule": d.rule,
                               "router_version": scorer.version,
                               "predicted_quality": d.predicted_quality,
                               "estimated_cost_usd": d.estimated_cost_usd,
                               "feedback_adjustment": d.feedback_adjustment}, indent=1))
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"tau={tolerance} threshold={d.threshold:.3f} -> {d.model_id}")
    moved = d.feedback_adjustment or {}  # a column only when feedback moved some estimate
    for col in ("model", "predicted quality", *(["of which feedback"] if moved else []),
                "estimated cost (USD)", ""):
        t.add_column(col)
    for m in sorted(d.predicted_quality, key=lambda m: -d.predicted_quality[m]):
        q = d.predicted_quality[m]
        mark = "chosen" if m == d.model_id else ("feasible" if q >= d.threshold else "")
        fb = [f"{moved[m]:+.3f}" if m in moved else ""] if moved else []
        t.add_row(m, f"{q:.3f}", *fb, f"{d.estimated_cost_usd[m]:.6f}", mark)
    Console().print(t)


@app.command()
@command
def recalibrate(
    artifacts: ArtifactsOpt,
    feedback: Annotated[
        Path, typer.Option(help='JSONL: {"model_id", "quality", "text"} per label')
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="directory of the new version")],
) -> None:
    """Offline recalibration: fit each labelled model's local correction from the feedback,
    publish a new version only where the guardrail passes."""
    import numpy as np
    import orjson

    from ipr_model.training.refit import recalibrate as run
    from ipr_model.training.train import embed

    rows: dict[str, list[tuple[str, float]]] = {}
    for n, line in enumerate(feedback.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            r = orjson.loads(line)
            rows.setdefault(str(r["model_id"]), []).append((str(r["text"]), float(r["quality"])))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise UserError(f"{feedback}:{n}: expected {{model_id, quality, text}}: {e}") from None
    labels = {}
    for model, pairs in rows.items():
        emb = embed(Path(artifacts) / "encoder", [t for t, _ in pairs])
        labels[model] = (emb, np.array([q for _, q in pairs]))
    result = run(artifacts, labels, out)
    for m in result.models:
        verdict = "published" if m.published else "kept the current version"
        typer.echo(f"{m.model_id}: {m.labels} labels, held-out Brier {m.brier_uncorrected:.4f} -> "
                   f"{m.brier_candidate:.4f}: {verdict}")
    typer.echo(f"new version {result.version} at {out}" if result.version else "nothing published")


if __name__ == "__main__":
    app()
