"""One-screen text summaries printed at the end of long commands."""

from __future__ import annotations

from basketcast.pipeline.evaluation.report import EvaluationReport
from basketcast.pipeline.workflows.run import TrainResult

SUMMARY_METRICS = ("precision@5", "recall@10", "ndcg@10", "map@10", "hit_rate@10")


def report_summary(report: EvaluationReport) -> str:
    """Method × key metric table, Kaggle F1, candidate recall, ratios of the ranker."""
    width = max(len(m) for m in report.methods) + 2
    lines = [f"held-out users: {report.users}" + (f" ({report.folds}-fold)" if report.folds else "")]
    lines.append(f"{'method':<{width}}" + "".join(f"{m:>13}" for m in SUMMARY_METRICS))
    for name, metrics in report.methods.items():
        lines.append(f"{name:<{width}}" + "".join(f"{metrics[m]:13.4f}" for m in SUMMARY_METRICS))
    kf = report.kaggle_f1
    lines.append(
        f"Kaggle F1: F1-optimal baskets {kf['lightgbm_f1_optimal']:.4f} vs top-frequency best fixed size "
        f"(k={kf['top_frequency_best_k']:.0f}) {kf['top_frequency_best_fixed_size']:.4f}"
    )
    cr = report.candidate_recall
    lines.append(
        f"candidate recall: {cr.all:.3f} (repeat {cr.repeat:.3f}, new {cr.new:.3f}), "
        f"{cr.candidates_per_user:.0f} candidates/user"
    )
    r = report.ratios
    lines.append(
        f"ranker vs TIFU-KNN: NDCG@10 ×{r['ndcg@10_vs_tifu_knn']:.3f}, Recall@10 ×{r['recall@10_vs_tifu_knn']:.3f}; "
        f"vs top-frequency: NDCG@10 ×{r['ndcg@10_vs_top_frequency']:.3f}, "
        f"Recall@10 ×{r['recall@10_vs_top_frequency']:.3f}"
    )
    return "\n".join(lines)


def train_summary(result: TrainResult) -> str:
    rule = "─" * 78
    return "\n".join(
        [
            rule,
            f"run folder: {result.run_dir}   (ranking objective: {result.report.ranking_objective})",
            rule,
            result.timings.table(),
            rule,
            report_summary(result.report),
            rule,
        ]
    )
