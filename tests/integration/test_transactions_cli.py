"""``basketcast ingest --format transactions`` end to end, through the real command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from basketcast.pipeline.data import schema as S
from basketcast.pipeline.data.storage import read_dataset, read_manifest
from tests.integration.test_cli import bc

pytestmark = pytest.mark.integration

LOG = "customer;basket;sku;ts;qty;price\n1;A1;7;2024-03-03T09:15:00;1;2.5\n1;A1;8;2024-03-03T09:15:20;2;1.0\n"
LOG += "1;A2;8;1709661600;1;1.0\n2;B1;7;2024-03-06 23:59:00+01:00;1;2.5\n"


def test_a_shop_log_becomes_a_data_folder(tmp_path: Path) -> None:
    (tmp_path / "log.csv").write_text(LOG)
    (tmp_path / "catalog.csv").write_text(
        "product_id,product_name,aisle,department\n7,Milk,milk,dairy\n8,Tea,tea,drinks\n"
    )
    result = bc(
        "ingest", "--format", "transactions", "--source", tmp_path / "log.csv", "--out", tmp_path / "data",
        "--user-col", "customer", "--order-col", "basket", "--product-col", "sku", "--time-col", "ts",
        "--quantity-col", "qty", "--catalog", tmp_path / "catalog.csv", "--last-order", "test",
    )  # fmt: skip
    assert "ingested 3 orders, 2 lines, 2 users" in result.stdout
    data = read_dataset(tmp_path / "data")
    assert data.orders.sort(S.USER, S.ORDER_NUMBER)[S.EVAL_SET].to_list() == ["prior", "test", "test"]
    assert data.products[S.PRODUCT_NAME].to_list() == ["Milk", "Tea"]
    assert read_manifest(tmp_path / "data").source.startswith("transactions:")


def test_bad_input_is_one_error_line_and_status_2(tmp_path: Path) -> None:
    (tmp_path / "log.tsv").write_text(LOG.replace(";", "\t"))
    result = bc(
        "ingest", "--format", "transactions", "--source", tmp_path / "log.tsv", "--out", tmp_path / "data",
        "--sep", ",", "--user-col", "customer", "--order-col", "basket", "--product-col", "sku", "--time-col", "ts",
        ok=False,
    )  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ") and "log.tsv, column customer: missing" in result.stderr
    assert "pass --sep '\\t'" in result.stderr
    (tmp_path / "bad.csv").write_text("user_id,order_id,product_id,timestamp\n1,1,5,2024-03-03\n1,2,5,next week\n")
    result = bc(
        "ingest", "--format", "transactions", "--source", tmp_path / "bad.csv", "--out", tmp_path / "d", ok=False
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "bad.csv, column timestamp: 1 row are neither ISO 8601" in result.stderr and "row=2" in result.stderr
    assert not (tmp_path / "data").exists() and not (tmp_path / "d").exists()


def test_log_options_are_refused_with_the_kaggle_format(tmp_path: Path) -> None:
    result = bc("ingest", "--source", tmp_path, "--out", tmp_path / "data", "--sep", ";", ok=False)
    assert result.returncode == 2 and "--sep: only with --format transactions" in result.stderr
