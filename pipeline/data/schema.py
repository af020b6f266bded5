"""The one registry of table names, column names and dtypes.

Every module that touches data imports its column names from here; no other file spells a
column name as a string literal. The canonical data folder (``DATA_DIR``) holds one Parquet file
per table below, with exactly these columns and dtypes, plus ``manifest.json``.
"""

from __future__ import annotations

from typing import Final

import polars as pl

SCHEMA_VERSION: Final = 1

# --- column names -------------------------------------------------------------------------
ORDER: Final = "order_id"
USER: Final = "user_id"
EVAL_SET: Final = "eval_set"
ORDER_NUMBER: Final = "order_number"
DOW: Final = "order_dow"
# ``order_dow`` 0 = Sunday … 6 = Saturday. Instacart does not say so; basketcast assumes it everywhere
# (the transaction-log converter writes it, ``basketcast.pipeline.data.transactions``), and Instacart's own rows
# agree: every order with days < 30 has dow = previous dow + days mod 7, and 0 and 1 carry the
# weekend peak.
DAY_NAMES: Final = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")
DAY_NAMES_NOTE: Final = "days named assuming order_dow 0 = Sunday (Instacart does not document it)"
HOUR: Final = "order_hour_of_day"
DAYS_PRIOR: Final = "days_since_prior_order"
PRODUCT: Final = "product_id"
CART_POS: Final = "add_to_cart_order"
REORDERED: Final = "reordered"
PRODUCT_NAME: Final = "product_name"
AISLE: Final = "aisle_id"
AISLE_NAME: Final = "aisle"
DEPARTMENT: Final = "department_id"
DEPARTMENT_NAME: Final = "department"

# Columns produced inside the pipeline (not part of the canonical tables).
TARGET_ORDER_NUMBER: Final = "target_order_number"  # the order a cutoff predicts
CUM_DAYS: Final = "cum_days"  # days from the user's first order to this order
SCORE: Final = "score"
RANK: Final = "rank"
LABEL: Final = "label"
WINDOW: Final = "window"  # 0 = the latest labelled order, 1 = the one before, ...

# Columns the model layers add (candidates, training rows, baskets); named here so that no other
# module spells them.
IS_REPEAT: Final = "is_repeat"  # Boolean: the user bought the candidate before the cutoff
ALS_SCORE: Final = "als_score"  # Float32: the ALS generator's dot product of user and item factors
ALS_RANK: Final = "als_rank"  # 1 = the best of the user's candidates by ALS_SCORE
ROLE: Final = "role"  # a user's role in training: fit / stop / valid
SAMPLING_WEIGHT: Final = "sampling_weight"  # 1 / negative sampling rate on kept negatives, else 1
USER_WEIGHT: Final = "user_weight"  # equal total weight for every (window, user) group
BASKET_PRODUCTS: Final = "products"  # List[UInt32]: a basket's chosen products, most probable first
BASKET_NONE: Final = "none"  # Boolean: whether the "None" token is predicted
BASKET_EXPECTED_F1: Final = "expected_f1"  # Float64: the basket's maximal expected F1

# Feature columns read by name outside the feature group that computes them (every feature is
# listed in its group's FEATURES; these few are also inputs of the request-time context features
# and of the candidate cap).
U_DAYS_MEAN: Final = "u_days_mean"  # the user's mean days between orders
U_HOUR_MEAN: Final = "u_hour_mean"  # the user's mean hour of day
UP_DAYS_BEFORE_LAST: Final = "up_days_before_last_order"  # days from the product's last purchase to the last order
UP_MEAN_GAP_DAYS: Final = "up_mean_gap_days"  # the user's mean days between two purchases of the product
UP_DECAY_09: Final = "up_decay_09"  # time-decayed purchase count (0.9 per order back)

# --- eval sets -----------------------------------------------------------------------------
PRIOR: Final = "prior"
TRAIN: Final = "train"
TEST: Final = "test"
EVAL_SETS: Final = (PRIOR, TRAIN, TEST)
EVAL_SET_DTYPE: Final = pl.Enum(list(EVAL_SETS))

# --- canonical tables ----------------------------------------------------------------------
ORDERS: Final = "orders"
ORDER_PRODUCTS: Final = "order_products"
PRODUCTS: Final = "products"
AISLES: Final = "aisles"
DEPARTMENTS: Final = "departments"

TABLE_SCHEMAS: Final[dict[str, dict[str, pl.DataType]]] = {
    ORDERS: {
        ORDER: pl.UInt32(),
        USER: pl.UInt32(),
        EVAL_SET: EVAL_SET_DTYPE,
        ORDER_NUMBER: pl.UInt16(),
        DOW: pl.UInt8(),
        HOUR: pl.UInt8(),
        DAYS_PRIOR: pl.UInt8(),  # null for a user's first order
    },
    ORDER_PRODUCTS: {
        ORDER: pl.UInt32(),
        PRODUCT: pl.UInt32(),
        CART_POS: pl.UInt16(),
        REORDERED: pl.UInt8(),
        EVAL_SET: EVAL_SET_DTYPE,  # which Kaggle file the line came from (prior or train)
    },
    PRODUCTS: {
        PRODUCT: pl.UInt32(),
        PRODUCT_NAME: pl.String(),
        AISLE: pl.UInt16(),
        DEPARTMENT: pl.UInt8(),
    },
    AISLES: {AISLE: pl.UInt16(), AISLE_NAME: pl.String()},
    DEPARTMENTS: {DEPARTMENT: pl.UInt8(), DEPARTMENT_NAME: pl.String()},
}
TABLES: Final = tuple(TABLE_SCHEMAS)

# Ranges the ingest step enforces (inclusive).
DOW_RANGE: Final = (0, 6)
HOUR_RANGE: Final = (0, 23)
DAYS_PRIOR_RANGE: Final = (0, 30)

# Kaggle file names of the source layout.
KAGGLE_FILES: Final[dict[str, str]] = {
    ORDERS: "orders",
    "order_products__prior": "order_products__prior",
    "order_products__train": "order_products__train",
    PRODUCTS: "products",
    AISLES: "aisles",
    DEPARTMENTS: "departments",
}


def empty_table(table: str) -> pl.DataFrame:
    """An empty frame with the canonical columns and dtypes of ``table``."""
    return pl.DataFrame(schema=TABLE_SCHEMAS[table])


def conform(table: str, frame: pl.DataFrame) -> pl.DataFrame:
    """Select and cast ``frame`` to the canonical column order and dtypes of ``table``.

    Casting is strict: a value that does not fit raises instead of turning into null.
    """
    schema = TABLE_SCHEMAS[table]
    return frame.select([pl.col(name).cast(dtype, strict=True) for name, dtype in schema.items()])
