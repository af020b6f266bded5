"""The evaluation report: one typed document, written as ``report.json``, ``report.md`` and charts.

:func:`basketcast.pipeline.evaluation.evaluate.evaluation_report` computes it; ``basketcast train`` and
``basketcast evaluate`` write it with :func:`write_report`; the summary, MLflow logging, the
benchmarks and the dashboard read it back with :meth:`EvaluationReport.load` — by attribute,
never by string key.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Final, Self

from pydantic import BaseModel, ConfigDict, Field

from basketcast.pipeline.data.publish import Kind, atomic_write_bytes, loads
from basketcast.pipeline.data.storage import read_json
from basketcast.pipeline.errors import DataError
from basketcast.pipeline.evaluation.cart import CartCompletion

REPORT_JSON: Final = "report.json"
REPORT_MD: Final = "report.md"
FIGURES_HTML: Final = "figures.html"
RANKER: Final = "lightgbm"  # the method name of the ranker in every table
XGBOOST: Final = "xgboost"
SEQUENCE: Final = "sequence_model"  # the sequence network alone (basketcast.pipeline.model.sequence)
BASELINES: Final = ("popularity", "top_frequency", "tifu_knn", "als")
CURVE_KS: Final = tuple(range(1, 21))


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CandidateRecall(_Part):
    """Share of the true (user, product) pairs inside the candidate set."""

    all: float
    repeat: float  # among products the user bought before
    new: float  # among products new to the user
    repeat_truth_share: float  # share of the truth that is repeat products
    candidates_per_user: float


class RepeatNewHits(_Part):
    """The ranker's hits@10 split into repeat and new products (see ``metrics.repeat_new_hits``)."""

    hits: float
    repeat_hits: float
    new_hits: float
    repeat_share: float
    new_share: float
    repeat_truth: float
    new_truth: float
    repeat_recall: float
    new_recall: float


class CalibrationBin(_Part):
    """One equal-count bin of the basket probabilities."""

    predicted: float  # mean predicted probability
    observed: float  # share of the bin's rows in the next order
    count: int


class EvaluationReport(BaseModel):
    """Every method against the same held-out orders.

    ``methods``: method → metric name (``precision@5``, ``ndcg@10``…) → mean over users;
    ``curves``: method → ``precision@K`` / ``recall@K`` … for K = 1..20; ``kaggle_f1``: basket
    F1 of each basket strategy; ``ratios``: the ranker's NDCG@10 / Recall@10 over each baseline's.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    users: int  # held-out users evaluated
    candidate_rows: int
    methods: dict[str, dict[str, float]]
    curves: dict[str, dict[str, float]]
    kaggle_f1: dict[str, float]
    candidate_recall: CandidateRecall
    repeat_new_hits_at_10: RepeatNewHits = Field(alias="repeat_new_hits@10")
    calibration: list[CalibrationBin]
    ratios: dict[str, float]
    ranker_beats_all_baselines: bool
    ranking_objective: str | None = None  # the objective the run's ranker was trained with
    selection: dict[str, float] = Field(default_factory=dict)  # stop-user NDCG@10 of each objective
    folds: int | None = None  # k of a k-fold cross-validated report
    timings: dict[str, float] = Field(default_factory=dict)
    # method → repeat_/explore_ ndcg@10, recall@10, users: the truth split into products the user
    # bought before and products new to them.
    repeat_explore: dict[str, dict[str, float]] = Field(default_factory=dict)
    # "What goes in the cart next" on the validation users (basketcast.pipeline.evaluation.cart), and the
    # choices made on the stop users: the cart weight β and the source of P(None) of the baskets.
    cart_completion: CartCompletion | None = None
    cart_weight: float | None = None
    cart_attention_weight: float | None = None
    none_source: str | None = None

    @property
    def ranker(self) -> dict[str, float]:
        """The ranker's metrics."""
        return self.methods[RANKER]

    def to_json_dict(self) -> dict[str, object]:
        """The JSON document (aliases as keys, absent optional parts left out)."""
        return self.model_dump(by_alias=True, exclude_none=True)

    def save(self, path: Path) -> None:
        """Write ``report.json`` at ``path`` (atomically; NaN stays NaN)."""
        atomic_write_bytes(path, (json.dumps(self.to_json_dict(), indent=2, sort_keys=True) + "\n").encode())

    @classmethod
    def load(cls, path: Path) -> Self:
        """Read a ``report.json``; DataError names the file and the first problems."""
        payload = read_json(path)
        try:
            return cls.model_validate(payload)
        except ValueError as exc:
            raise DataError(f"{path}: not an evaluation report of this basketcast ({exc})") from exc


REPORT_FOLDER = Kind(
    "evaluation report folder", folder=True, recognise=loads(lambda path: EvaluationReport.load(path / REPORT_JSON))
)


def markdown(report: EvaluationReport, title: str = "Evaluation") -> str:
    """The report as a Markdown document (tables of metrics, baskets, candidate recall)."""
    ks = sorted({int(name.split("@")[1]) for name in next(iter(report.methods.values()))})
    cols = [f"{m}@{k}" for k in ks for m in ("precision", "recall", "f1", "ndcg", "hit_rate", "map")]
    lines = [
        f"# {title}",
        "",
        f"Users evaluated: {report.users} (held out; never trained on). Candidate rows: {report.candidate_rows}.",
        "",
    ]
    lines.append("| method | " + " | ".join(cols) + " |")
    lines.append("|---" * (len(cols) + 1) + "|")
    for name, metrics in report.methods.items():
        lines.append(f"| {name} | " + " | ".join(f"{metrics[c]:.4f}" for c in cols) + " |")
    lines += ["", "## Kaggle F1 (mean F1 of the basket vs the reordered products, 'None' as a token)", ""]
    lines += [f"- {k}: {v:.4f}" for k, v in report.kaggle_f1.items()]
    lines += ["", "## Ranker vs baselines at 10", ""]
    lines += [f"- {k}: {v:.3f}" for k, v in report.ratios.items()]
    cr = report.candidate_recall
    lines += [
        "",
        "## Candidate recall",
        "",
        f"- all: {cr.all:.4f}, repeat: {cr.repeat:.4f}, new: {cr.new:.4f} "
        f"(repeat share of truth {cr.repeat_truth_share:.3f}; {cr.candidates_per_user:.1f} candidates/user)",
    ]
    rn = report.repeat_new_hits_at_10
    lines += [
        "",
        "## Ranker hits@10: repeat vs new",
        "",
        f"- hits {rn.hits}: repeat share {rn.repeat_share:.3f}, new share {rn.new_share:.3f}",
    ]
    if report.repeat_explore:
        lines += ["", "## Repeat and explore products at 10 (truth split by whether the user bought it before)", ""]
        keys = list(next(iter(report.repeat_explore.values())))
        lines.append("| method | " + " | ".join(keys) + " |")
        lines.append("|---" * (len(keys) + 1) + "|")
        for name, row in report.repeat_explore.items():
            lines.append(f"| {name} | " + " | ".join(f"{row[k]:.4f}" for k in keys) + " |")
    if report.cart_completion is not None:
        lines += [
            "",
            f"## What goes in the cart next (served: ranker + γ·cart attention + β·PMI, γ = "
            f"{report.cart_attention_weight}, β = {report.cart_weight})",
            "",
        ]
        lines.append(report.cart_completion.markdown())
    if report.none_source is not None:
        lines += ["", f"P(None) of the baskets: {report.none_source} (chosen on the stop users' Kaggle F1)."]
    return "\n".join(lines) + "\n"


def write_report(
    report: EvaluationReport, out: Path, title: str, importance: Mapping[str, float] | None = None
) -> None:
    """``report.json``, ``report.md`` and the charts into folder ``out`` (which must exist)."""
    report.save(out / REPORT_JSON)
    atomic_write_bytes(out / REPORT_MD, markdown(report, title).encode())
    write_figures(report, out, title, importance)


def write_figures(
    report: EvaluationReport, out: Path, title: str, importance: Mapping[str, float] | None = None
) -> None:
    """The report's charts: precision/recall@K, calibration and feature importance."""
    from basketcast.pipeline.evaluation import figures

    charts = [
        ("Precision and recall at K on held-out users", figures.precision_recall_at_k(report.curves, CURVE_KS)),
        ("Calibration of the basket probabilities", figures.calibration([b.model_dump() for b in report.calibration])),
    ]
    if importance:
        charts.append(("Ranker feature importance", figures.feature_importance(importance, 25)))
    figures.write_figures_html(out / FIGURES_HTML, charts, title)
