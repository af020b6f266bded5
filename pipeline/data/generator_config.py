"""The knobs of the synthetic generator (:mod:`basketcast.pipeline.data.generate` tells the generative story).

Defaults are tuned so that the headline figures land near the real Instacart data; every field
says what it controls. :mod:`basketcast.pipeline.data.simulate` reads them, :mod:`basketcast.pipeline.data.generate`
takes them.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from basketcast.pipeline.data.catalogue import DEPARTMENT_NAMES


class GeneratorConfig(BaseModel):
    """Knobs of the synthetic generator; the defaults mimic the real Instacart data.

    Changing any field (``chunk_users`` included) changes the generated data for a given seed.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    # catalog
    n_products: int = Field(default=49_688, ge=134, description="products in the catalog (134 aisles, 21 departments)")
    aisle_zipf: float = Field(default=0.8, ge=0, description="Zipf exponent of aisle popularity within a department")
    product_zipf: float = Field(default=1.0, ge=0, description="Zipf exponent of product popularity within an aisle")
    popularity_noise: float = Field(default=0.3, ge=0, description="log-normal sigma on product popularity")

    # orders per user: min_orders + NegBin(shape, mean=extra_orders_mean), capped at max_orders
    min_orders: int = Field(default=4, ge=2, description="fewest orders per user (train/test order included)")
    max_orders: int = Field(default=100, ge=2, le=65_535, description="most orders per user")
    extra_orders_mean: float = Field(default=12.6, gt=0, description="mean of the NegBin orders above min_orders")
    extra_orders_shape: float = Field(default=0.6, gt=0, description="NegBin shape (small = heavy tail)")

    # days between orders
    gap_median: float = Field(default=12.0, gt=0, description="median over users of the typical gap in days")
    gap_sigma: float = Field(default=1.0, ge=0, description="log-normal sigma of the typical gap over users")
    gap_shape: float = Field(default=2.5, gt=0, description="Gamma shape of one user's gaps around the typical gap")
    weekly_habit_a: float = Field(default=1.0, gt=0, description="Beta(a, b) of the chance a gap is whole weeks")
    weekly_habit_b: float = Field(default=8.0, gt=0, description="Beta(a, b) of the chance a gap is whole weeks")
    max_gap: int = Field(default=30, ge=1, le=255, description="gaps are capped here ('30 or more')")
    frequency_orders_corr: float = Field(
        default=0.6, ge=0, le=1, description="copula loading linking many orders to short gaps"
    )

    # basket size and its split between staples and exploration
    basket_median: float = Field(default=10.5, gt=0, description="median over users of the mean basket size")
    basket_sigma: float = Field(default=0.55, ge=0, description="log-normal sigma of the user's basket size")
    trip_shape: float = Field(default=3.0, gt=0, description="Gamma shape of the per-order size factor (mean 1)")
    loyalty_a: float = Field(default=6.0, gt=0, description="Beta(a, b) of the staple share of a user's basket")
    loyalty_b: float = Field(default=3.0, gt=0, description="Beta(a, b) of the staple share of a user's basket")
    staple_prob_a: float = Field(default=2.0, gt=0, description="Beta(a, b) of a staple's base buy probability q")
    staple_prob_b: float = Field(default=1.5, gt=0, description="Beta(a, b) of a staple's base buy probability q")
    staple_effective_prob: float = Field(
        default=0.33, gt=0, le=1, description="assumed mean buy probability used to size the staple set"
    )
    max_staples: int = Field(default=48, ge=1, le=255, description="staple slots per user")
    initial_fill: float = Field(default=0.7, ge=0, le=1, description="share of staple slots filled before order 1")
    staple_popularity_power: float = Field(default=1.4, ge=0, description="popularity exponent when picking staples")
    reorder_propensity_power: float = Field(
        default=1.0,
        ge=0,
        description="exponent of the department reorder odds tilting staple choice and adoption",
    )
    max_buy_prob: float = Field(default=0.97, gt=0, le=1, description="cap of a staple's per-order buy probability")

    # recency: floor + (1 - floor) * exp(-days/recency_days - (orders - 1)/recency_orders)
    recency_floor: float = Field(default=0.25, ge=0, le=1, description="share of the buy probability that never decays")
    recency_days: float = Field(default=30.0, gt=0, description="e-folding days of the decaying share")
    recency_orders: float = Field(default=8.0, gt=0, description="e-folding missed orders of the decaying share")
    retire_prob: float = Field(default=0.03, ge=0, le=1, description="chance per order that a staple is dropped")
    adopt_prob: float = Field(default=0.3, ge=0, le=1, description="chance a newly explored product becomes a staple")

    # taste
    department_concentration: float = Field(default=8.0, gt=0, description="Dirichlet total over departments")
    aisle_concentration: float = Field(default=2.5, gt=0, description="Dirichlet total over a department's aisles")
    explore_popularity_power: float = Field(default=1.0, ge=0, description="popularity exponent for exploration")

    # day of week and hour
    dow_loyalty_a: float = Field(default=2.0, gt=0, description="Beta(a, b) of the chance to shop on the preferred dow")
    dow_loyalty_b: float = Field(default=3.0, gt=0, description="Beta(a, b) of the chance to shop on the preferred dow")
    hour_loyalty: float = Field(default=0.7, ge=0, le=1, description="chance to shop near the preferred hour")
    hour_spread: float = Field(default=1.5, ge=0, description="sd in hours around the preferred hour")

    # eval sets and execution
    train_share: float = Field(default=0.636, ge=0, le=1, description="share of users whose last order is train")
    chunk_users: int = Field(default=32_768, ge=1, description="users simulated together (memory vs speed)")

    # a deliberate shift of each user's most recent orders (drift monitoring tests; off by default)
    shift_days: int = Field(
        default=0, ge=0, description="orders in each user's last shift_days days of history are shifted (0: none)"
    )
    shift_basket_size: float = Field(
        default=1.0, gt=0, description="multiplier of the number of products in a shifted order"
    )
    shift_department: int | None = Field(
        default=None,
        description="department (id 1-21, or its name: stored as the id) that a shifted order's purchases move towards",
    )
    shift_department_share: float = Field(
        default=0.5, ge=0, le=1, description="share of a shifted order's products replaced by that department's"
    )

    @field_validator("shift_department", mode="before")
    @classmethod
    def _department_id(cls, value: object) -> object:
        """A department name (any case) or id, as written on the command line, becomes its id."""
        if isinstance(value, str):
            text = value.strip()
            if text.isdigit():
                value = int(text)
            elif text.lower() in DEPARTMENT_NAMES:
                return DEPARTMENT_NAMES.index(text.lower()) + 1
            else:
                raise ValueError(f"unknown department {value!r}; one of {', '.join(DEPARTMENT_NAMES)} or an id 1-21")
        if isinstance(value, int) and not isinstance(value, bool) and not 1 <= value <= len(DEPARTMENT_NAMES):
            raise ValueError(f"department id {value} is not in 1-{len(DEPARTMENT_NAMES)}")
        return value

    @model_validator(mode="after")
    def _shift_needs_days(self) -> GeneratorConfig:
        if self.shift_days == 0 and (self.shift_basket_size != 1.0 or self.shift_department is not None):
            raise ValueError("shift_basket_size and shift_department need shift_days > 0")
        return self

    @property
    def shifted(self) -> bool:
        """Whether any order is shifted (the unshifted data stays what it was before the option existed)."""
        return self.shift_days > 0 and (self.shift_basket_size != 1.0 or self.shift_department is not None)
