"""The real sample's catalogue: products' aisle and department from the log generator's real lines."""

from __future__ import annotations

import io

import numpy as np
import pytest

from basketcast.pipeline.data import schema as S
from basketcast.pipeline.data.sample import catalogue_frames
from basketcast.pipeline.errors import DataError

NAMES = ["frozen", "other", "bakery", "produce", "alcohol", "international", "beverages", "pets", "dry goods pasta"]
NAMES += ["bulk", "personal care", "meat seafood", "pantry", "breakfast", "canned goods", "dairy eggs", "household"]
NAMES += ["babies", "snacks", "deli", "missing"]
INFO = f"REQUEST_URL = {{'/order': 0.6}}\nDEPARTMENT_CATEGORY = {NAMES!r}\nBODY = {{}}\n".encode()


def _npy(rows: list[list[float]]) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(rows, dtype=np.float64))
    return buf.getvalue()


def test_catalogue_from_real_lines() -> None:
    # order, product, cart position, reordered, aisle, department, order number, dow, hour, days
    lines = _npy(
        [
            [1, 37203, 3, 0, 111, 17, 5, 4, 7, 30],
            [2, 35108, 4, 1, 36, 16, 11, 3, 12, 19],
            [3, 37203, 1, 1, 111, 17, 2, 1, 9, 8],
        ]
    )
    frames = catalogue_frames(lines, INFO)
    products = frames[S.PRODUCTS]
    assert products[S.PRODUCT].to_list() == [35108, 37203]
    assert products[S.AISLE].to_list() == [36, 111]
    assert products[S.DEPARTMENT].to_list() == [16, 17]
    assert frames[S.AISLES][S.AISLE].to_list() == [36, 111]
    depts = frames[S.DEPARTMENTS]
    assert depts.height == 21
    assert dict(zip(depts[S.DEPARTMENT].to_list(), depts[S.DEPARTMENT_NAME].to_list(), strict=True))[16] == "dairy eggs"
    assert dict(zip(depts[S.DEPARTMENT].to_list(), depts[S.DEPARTMENT_NAME].to_list(), strict=True))[4] == "produce"


def test_a_department_list_of_another_length_is_refused() -> None:
    with pytest.raises(DataError, match="21 departments"):
        catalogue_frames(_npy([[1, 2, 1, 0, 3, 4, 1, 0, 0, 0]]), b"DEPARTMENT_CATEGORY = ['a', 'b']\n")
