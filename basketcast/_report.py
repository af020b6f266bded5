"""Evaluation reports as Polars tables (shared by ``Run.report`` and ``Recommender.evaluate``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import polars as pl

if TYPE_CHECKING:
    from basketcast.pipeline.evaluation.report import EvaluationReport

METHOD = "method"  # the first column of a metrics table: the method (lightgbm, popularity, tifu_knn…)


def metrics_frame(report: EvaluationReport) -> pl.DataFrame:
    """An evaluation report's metrics as a table: one row per method, one column per metric
    (``precision@5``, ``ndcg@10``…; means over the evaluated users), in the report's order."""
    return pl.DataFrame([{METHOD: method, **metrics} for method, metrics in report.methods.items()])
