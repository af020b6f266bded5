"""Synthetic grocery orders in the canonical (Instacart Kaggle) layout.

:func:`generate` returns a :class:`~pipeline.data.storage.Dataset` whose tables have exactly the columns and
dtypes of :data:`pipeline.data.schema.TABLE_SCHEMAS`: every user's orders are ``prior`` except the last,
which is ``train`` (about 64 %) or ``test``; ``order_products`` holds lines for prior and train orders
only (none for test orders), each carrying the eval set of its order. The defaults of
:class:`GeneratorConfig` are tuned so that the headline figures land near the real data (basket
size ~10, reorder ratio of prior lines ~0.59, median days between orders 7, ~16.6 orders per user).

Generative story
----------------
*Catalog.* The 21 real Instacart departments hold 134 aisles (plausible names, listed per
department from the most to the least popular). Products (49,688 by default) are split over
departments in the real proportions (personal care and snacks have the most products, bulk the
fewest) and over a department's aisles at random. A product's global purchase share is
``department share x aisle share x product share``: department shares are the real line shares
(produce ~29 %, dairy eggs ~17 %, ..., bulk 0.1 %), aisles within a department and products within an
aisle follow Zipf laws (with a little log-normal noise). Product names combine a modifier, a
variant and an aisle noun ("Organic Whole Milk"), numbered when repeated; product ids (and aisle
ids) are alphabetical by name, as in the real data, so an id says nothing about popularity.

*Users.* Each user draws

- a number of orders ``4 + NegBin`` capped at 100 (heavy right tail: mean ~16.6, median ~10) and a
  typical gap between orders (log-normal, median ~12 days); a Gaussian copula makes users with many
  orders shop more often;
- a weekly habit: with a per-user probability a gap is snapped to a multiple of 7 days, giving the
  spikes at 7, 14, 21, 28; gaps are capped at 30 ("30 or more"), which piles infrequent shoppers at 30;
- a preferred day of week and hour (drawn from the real marginals: most orders on days 0 and 1, hours
  9-16, few at night) and how faithfully the user keeps them;
- a basket size (log-normal, long right tail) and a loyalty share that splits it between staples and
  exploration;
- a taste: a Dirichlet over departments around the global shares, and within each department a
  Dirichlet over its aisles.

*Staples.* A user keeps a personal set of favourite products (at most ``max_staples`` slots; the
capacity grows with the user's basket size and loyalty). It starts partly filled with products drawn
from the user's aisle taste, tilted towards departments people reorder (dairy, produce, beverages) and
towards globally popular products (popularity raised to ``staple_popularity_power``). Each staple has
its own base probability ``q`` (Beta, "high") of being bought in an order; the probability actually
used is ``q x trip x recency`` where ``trip`` is a per-order Gamma factor (big and small shops) and
``recency = floor + (1 - floor) exp(-days_since_last / recency_days - (orders_since_last - 1) /
recency_orders)``, so a staple not bought for a while is less likely to come back: recency matters on
top of frequency. Every order each staple retires with a small probability (interests fade) and
freed slots are refilled by adoption: a newly explored product becomes a staple with probability
``adopt_prob x department reorder propensity``. So the staple set drifts over time, and a
recency-weighted purchase frequency predicts the next basket better than a plain count.

*Exploration.* Besides staples an order holds a Poisson number of explored products (rate = the
user's exploration share of the basket x the trip factor): an aisle from the user's taste, then a
product from that aisle's popularity. An explored product the user already bought is a reorder too.
An order that would be empty gets one explored product.

*Bookkeeping.* Within an order the products are distinct; ``add_to_cart_order`` runs 1..n with
staples tending to be added first; ``reordered`` is 1 exactly when the user bought the product in an
earlier order; ``order_id`` is a random permutation of 1..n_orders (not sorted by user).

Everything is vectorized: users are simulated in chunks of ``chunk_users``, looping over the order
position (1..100) for all users of a chunk at once. Same ``(n_users, seed, config)`` gives identical
frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
import polars as pl
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field

from pipeline.data import schema as S
from pipeline.data.storage import Dataset

__all__ = ["DEPARTMENT_NAMES", "GeneratorConfig", "generate"]

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]

# --- the catalog skeleton -------------------------------------------------------------------
# (department, products in the real data, share of real prior lines in %, real reorder ratio,
#  aisles from most to least popular).  Department ids are the list positions + 1, as in Kaggle.
_DEPARTMENTS: Final[tuple[tuple[str, int, float, float, tuple[str, ...]], ...]] = (
    (
        "frozen",
        4007,
        6.9,
        0.54,
        (
            "frozen meals",
            "frozen produce",
            "ice cream ice",
            "frozen pizza",
            "frozen breakfast",
            "frozen appetizers sides",
            "frozen meat seafood",
            "frozen vegan vegetarian",
            "frozen dessert",
            "frozen breads doughs",
            "frozen juice",
        ),
    ),
    ("other", 548, 0.1, 0.41, ("other",)),
    (
        "bakery",
        1516,
        3.6,
        0.63,
        ("bread", "breakfast bakery", "buns rolls", "tortillas flat bread", "bakery desserts"),
    ),
    (
        "produce",
        1684,
        29.2,
        0.65,
        ("fresh fruits", "fresh vegetables", "packaged vegetables fruits", "fresh herbs", "packaged produce"),
    ),
    (
        "alcohol",
        1054,
        0.5,
        0.57,
        ("beers coolers", "red wines", "white wines", "spirits", "specialty wines champagnes"),
    ),
    ("international", 1139, 0.8, 0.37, ("asian foods", "latino foods", "indian foods", "kosher foods")),
    (
        "beverages",
        4365,
        8.3,
        0.65,
        (
            "water seltzer sparkling water",
            "soft drinks",
            "juice nectars",
            "refrigerated",
            "coffee",
            "tea",
            "energy sports drinks",
            "cocoa drink mixes",
        ),
    ),
    ("pets", 972, 0.3, 0.60, ("cat food care", "dog food care")),
    (
        "dry goods pasta",
        1858,
        2.7,
        0.46,
        ("dry pasta", "pasta sauce", "instant foods", "grains rice dried goods", "fresh pasta"),
    ),
    ("bulk", 38, 0.1, 0.58, ("bulk dried fruits vegetables", "bulk grains rice dried goods")),
    (
        "personal care",
        6563,
        1.4,
        0.32,
        (
            "oral hygiene",
            "body lotions soap",
            "hair care",
            "vitamins supplements",
            "cold flu allergy",
            "skin care",
            "deodorants",
            "facial care",
            "feminine care",
            "first aid",
            "shave needs",
            "digestion",
            "muscles joints pain relief",
            "protein meal replacements",
            "eye ear care",
            "beauty",
            "sleep aids",
        ),
    ),
    (
        "meat seafood",
        907,
        2.2,
        0.57,
        (
            "packaged poultry",
            "hot dogs bacon sausage",
            "poultry counter",
            "meat counter",
            "packaged meat",
            "seafood counter",
            "packaged seafood",
        ),
    ),
    (
        "pantry",
        5371,
        5.8,
        0.35,
        (
            "baking ingredients",
            "spices seasonings",
            "condiments",
            "oils vinegars",
            "spreads",
            "preserved dips spreads",
            "honeys syrups nectars",
            "pickled goods olives",
            "salad dressing toppings",
            "marinades meat preparation",
            "doughs gelatins bake mixes",
            "baking supplies decor",
        ),
    ),
    (
        "breakfast",
        1115,
        2.2,
        0.56,
        ("cereal", "breakfast bars pastries", "hot cereal pancake mixes", "granola"),
    ),
    (
        "canned goods",
        2092,
        3.3,
        0.46,
        (
            "soup broth bouillon",
            "canned meals beans",
            "canned jarred vegetables",
            "canned fruit applesauce",
            "canned meat seafood",
        ),
    ),
    (
        "dairy eggs",
        3449,
        16.7,
        0.67,
        (
            "yogurt",
            "packaged cheese",
            "milk",
            "eggs",
            "soy lactosefree",
            "other creams cheeses",
            "cream",
            "butter",
            "refrigerated pudding desserts",
            "specialty cheeses",
        ),
    ),
    (
        "household",
        3085,
        2.3,
        0.40,
        (
            "paper goods",
            "cleaning products",
            "dish detergents",
            "laundry",
            "food storage",
            "trash bags liners",
            "plates bowls cups flatware",
            "kitchen supplies",
            "air fresheners candles",
            "more household",
        ),
    ),
    (
        "babies",
        1081,
        1.3,
        0.58,
        ("baby food formula", "diapers wipes", "baby bath body care", "baby accessories"),
    ),
    (
        "snacks",
        6264,
        8.9,
        0.57,
        (
            "chips pretzels",
            "crackers",
            "energy granola bars",
            "cookies cakes",
            "nuts seeds dried fruit",
            "candy chocolate",
            "popcorn jerky",
            "fruit vegetable snacks",
            "trail mix snack mix",
            "mint gum",
            "ice cream toppings",
        ),
    ),
    (
        "deli",
        1322,
        3.2,
        0.61,
        (
            "lunch meat",
            "prepared soups salads",
            "fresh dips tapenades",
            "tofu meat alternatives",
            "prepared meals",
        ),
    ),
    ("missing", 1258, 0.2, 0.40, ("missing",)),
)

DEPARTMENT_NAMES: Final[tuple[str, ...]] = tuple(d[0] for d in _DEPARTMENTS)

# Nouns used in product names, for the aisles where the aisle name itself reads badly.
_AISLE_NOUNS: Final[dict[str, tuple[str, ...]]] = {
    "fresh fruits": ("Bananas", "Apples", "Strawberries", "Blueberries", "Lemons", "Avocado", "Grapes"),
    "fresh vegetables": ("Spinach", "Carrots", "Onions", "Broccoli", "Zucchini", "Cucumber", "Kale"),
    "packaged vegetables fruits": ("Baby Spinach", "Salad Mix", "Baby Carrots", "Berries", "Greens"),
    "fresh herbs": ("Cilantro", "Basil", "Parsley", "Mint", "Dill"),
    "packaged produce": ("Mushrooms", "Sprouts", "Cut Fruit", "Snap Peas"),
    "yogurt": ("Greek Yogurt", "Yogurt", "Yogurt Cups", "Skyr"),
    "packaged cheese": ("Cheddar", "Mozzarella", "String Cheese", "Shredded Cheese", "Swiss Slices"),
    "milk": ("Milk", "Whole Milk", "Reduced Fat Milk", "Chocolate Milk"),
    "eggs": ("Large Eggs", "Brown Eggs", "Egg Whites"),
    "soy lactosefree": ("Almond Milk", "Soy Milk", "Oat Milk", "Coconut Milk"),
    "butter": ("Butter", "Salted Butter", "Ghee"),
    "cream": ("Half And Half", "Heavy Cream", "Sour Cream", "Creamer"),
    "bread": ("Sandwich Bread", "Sourdough", "Whole Wheat Bread", "Baguette"),
    "water seltzer sparkling water": ("Sparkling Water", "Spring Water", "Seltzer", "Mineral Water"),
    "soft drinks": ("Cola", "Ginger Ale", "Lemon Lime Soda", "Root Beer"),
    "chips pretzels": ("Tortilla Chips", "Potato Chips", "Pretzels", "Kettle Chips"),
    "crackers": ("Crackers", "Rice Crackers", "Graham Crackers"),
    "coffee": ("Ground Coffee", "Whole Bean Coffee", "Cold Brew"),
    "tea": ("Green Tea", "Black Tea", "Herbal Tea", "Chai"),
    "lunch meat": ("Turkey Breast", "Ham", "Salami", "Roast Beef"),
    "packaged poultry": ("Chicken Breast", "Chicken Thighs", "Ground Turkey"),
    "cereal": ("Cereal", "Oat Clusters", "Corn Flakes", "Bran Flakes"),
    "ice cream ice": ("Ice Cream", "Gelato", "Sorbet", "Ice Pops"),
    "frozen meals": ("Burrito", "Enchiladas", "Mac And Cheese Bowl", "Pot Pie"),
    "frozen produce": ("Frozen Peas", "Frozen Berries", "Frozen Corn", "Frozen Broccoli"),
}
_MODIFIERS: Final = (
    "Organic",
    "Natural",
    "Classic",
    "Original",
    "Family Size",
    "Low Fat",
    "Gluten Free",
    "Premium",
    "Homestyle",
    "Lite",
    "Simply",
    "Traditional",
    "Fresh",
    "Artisan",
    "Farmhouse",
    "Select",
)
_VARIANTS: Final = (
    "Original",
    "Plain",
    "Mixed",
    "Mini",
    "Classic",
    "Sweet",
    "Unscented",
    "Everyday",
    "Assorted",
    "Family",
)
# Variants that read well in a department (the generic ones above are used elsewhere).
_DEPT_VARIANTS: Final[dict[str, tuple[str, ...]]] = {
    "produce": ("Red", "Green", "Large", "Baby", "Seedless", "Yellow", "Sweet", "Bunched", "Fresh"),
    "dairy eggs": ("Whole", "2%", "Nonfat", "Vanilla", "Plain", "Strawberry", "Unsalted", "Sharp", "Honey"),
    "snacks": ("Sea Salt", "Barbecue", "Chocolate", "Honey", "Cheddar", "Peanut Butter", "Lightly Salted"),
    "beverages": ("Lemon", "Lime", "Unsweetened", "Diet", "Peach", "Mango", "Decaf", "Vanilla"),
    "frozen": ("Cheese", "Vegetable", "Chicken", "Chocolate", "Strawberry", "Three Cheese", "Mixed"),
    "bakery": ("Whole Wheat", "Multigrain", "Honey Wheat", "Cinnamon", "Sourdough", "Plain"),
    "pantry": ("Garlic", "Extra Virgin", "Smoked", "Spicy", "Roasted", "Pure", "Lemon"),
    "meat seafood": ("Boneless", "Smoked", "Lean", "Wild", "Thin Sliced", "Hickory"),
    "deli": ("Oven Roasted", "Smoked", "Spicy", "Garlic", "Mediterranean", "Classic"),
    "breakfast": ("Honey", "Cinnamon", "Blueberry", "Maple", "Chocolate", "Whole Grain"),
}

# Real marginals (share of orders) of order_dow and order_hour_of_day.
_DOW_SHARES: Final = (0.193, 0.174, 0.130, 0.121, 0.117, 0.130, 0.138)
_HOUR_SHARES: Final = (
    0.0066,
    0.0035,
    0.0021,
    0.0016,
    0.0016,
    0.0028,
    0.0090,
    0.0280,
    0.0530,
    0.0760,
    0.0850,
    0.0850,
    0.0820,
    0.0820,
    0.0830,
    0.0820,
    0.0780,
    0.0640,
    0.0500,
    0.0390,
    0.0300,
    0.0240,
    0.0190,
    0.0120,
)

# codes of the eval_set Enum (its physical representation)
_PRIOR_CODE: Final = S.EVAL_SETS.index(S.PRIOR)
_TRAIN_CODE: Final = S.EVAL_SETS.index(S.TRAIN)
_TEST_CODE: Final = S.EVAL_SETS.index(S.TEST)
_EXPLORE_CART_OFFSET: Final = 384  # cart-order priority bonus of explored items (out of 1024)


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


@dataclass(frozen=True)
class _Catalog:
    """Products in catalog order (grouped by aisle); ``product_ids`` maps catalog index to id."""

    n_aisles: int
    aisle_dept: I64  # department index (0-based) of each aisle (catalog aisle order)
    aisle_prior: F64  # global share of each aisle (sums to 1)
    aisle_start: I64  # first catalog index of each aisle (+ final end)
    explore_cdf: F64  # within-aisle cumulative popularity for exploration, offset by aisle index
    staple_cdf: F64  # the same with popularity ** staple_popularity_power
    product_dept: I64  # department index of each catalog product
    product_ids: NDArray[np.uint32]  # product_id of each catalog product
    dept_reorder_odds: F64  # per department, normalized reorder odds ** power
    products: pl.DataFrame
    aisles: pl.DataFrame
    departments: pl.DataFrame


def _largest_remainder(weights: F64, total: int, minimum: I64) -> I64:
    """Integers ``>= minimum`` (elementwise) summing to ``total``, roughly proportional to ``weights``."""
    rest = total - int(minimum.sum())
    if rest < 0:
        raise ValueError(f"cannot split {total} into {len(weights)} parts of at least {minimum.tolist()}")
    exact = weights / weights.sum() * rest
    floor = np.floor(exact).astype(np.int64)
    short = rest - int(floor.sum())
    floor[np.argsort(-(exact - floor), kind="stable")[:short]] += 1
    return minimum + floor


def _offset_cdf(weights: F64, group_start: I64) -> F64:
    """Per-group cumulative shares (each group ends at exactly 1) plus the group index.

    ``searchsorted(result, g + u, side="right")`` with ``u`` uniform in [0, 1) then samples an
    element of group ``g`` with probability proportional to its weight.
    """
    n_groups = len(group_start) - 1
    sizes = np.diff(group_start)
    group = np.repeat(np.arange(n_groups), sizes)
    totals = np.add.reduceat(weights, group_start[:-1])
    cum = np.cumsum(weights)
    before = np.concatenate(([0.0], cum[group_start[1:-1] - 1]))
    within = np.minimum((cum - np.repeat(before, sizes)) / np.repeat(totals, sizes), 1.0)
    within[group_start[1:] - 1] = 1.0  # each group ends exactly at 1 (monotone despite rounding)
    return within + group


def _build_catalog(rng: np.random.Generator, cfg: GeneratorConfig) -> _Catalog:
    """Departments, aisles and products with their popularity."""
    dept_names = [d[0] for d in _DEPARTMENTS]
    dept_products = np.array([d[1] for d in _DEPARTMENTS], dtype=np.float64)
    dept_share = np.array([d[2] for d in _DEPARTMENTS], dtype=np.float64)
    dept_share /= dept_share.sum()
    reorder = np.array([d[3] for d in _DEPARTMENTS], dtype=np.float64)
    odds = (reorder / (1 - reorder)) ** cfg.reorder_propensity_power
    odds /= np.average(odds, weights=dept_share)

    aisle_names: list[str] = []
    aisle_dept_list: list[int] = []
    aisle_prior_list: list[float] = []
    for d, (_, _, _, _, dept_aisles) in enumerate(_DEPARTMENTS):
        w = 1.0 / np.arange(1, len(dept_aisles) + 1) ** cfg.aisle_zipf
        aisle_names.extend(dept_aisles)
        aisle_dept_list.extend([d] * len(dept_aisles))
        aisle_prior_list.extend((dept_share[d] * w / w.sum()).tolist())
    n_aisles = len(aisle_names)
    aisle_dept = np.array(aisle_dept_list, dtype=np.int64)
    aisle_prior = np.array(aisle_prior_list, dtype=np.float64)

    # products per department (real proportions), then per aisle (random split, >= 1 each)
    aisles_per_dept = np.bincount(aisle_dept, minlength=len(_DEPARTMENTS))
    n_dept_products = _largest_remainder(dept_products, cfg.n_products, minimum=aisles_per_dept)
    aisle_sizes = np.empty(n_aisles, dtype=np.int64)
    for d in range(len(_DEPARTMENTS)):
        idx = np.flatnonzero(aisle_dept == d)
        split = rng.dirichlet(np.full(len(idx), 4.0))
        aisle_sizes[idx] = _largest_remainder(split, int(n_dept_products[d]), np.ones(len(idx), np.int64))
    aisle_start = np.concatenate(([0], np.cumsum(aisle_sizes)))
    n_products = int(aisle_start[-1])
    product_aisle = np.repeat(np.arange(n_aisles), aisle_sizes)
    rank = np.arange(n_products) - aisle_start[product_aisle] + 1
    popularity = rank**-cfg.product_zipf * rng.lognormal(0.0, cfg.popularity_noise, n_products)
    explore_cdf = _offset_cdf(popularity**cfg.explore_popularity_power, aisle_start)
    staple_cdf = _offset_cdf(popularity**cfg.staple_popularity_power, aisle_start)

    # names: "<modifier> <variant> <noun>", numbered when repeated
    modifier = rng.integers(0, len(_MODIFIERS) + 3, n_products)  # a few without modifier
    variant = rng.integers(0, 1 << 30, n_products)
    no_variant = rng.random(n_products) < 0.25
    noun_pick = rng.integers(0, 1 << 30, n_products)
    pools = [_DEPT_VARIANTS.get(_DEPARTMENTS[d][0], _VARIANTS) for d in aisle_dept]
    names: list[str] = []
    seen: dict[str, int] = {}
    for i in range(n_products):
        aisle_name = aisle_names[product_aisle[i]]
        nouns = _AISLE_NOUNS.get(aisle_name)
        noun = nouns[noun_pick[i] % len(nouns)] if nouns else aisle_name.title()
        parts = [
            _MODIFIERS[modifier[i]] if modifier[i] < len(_MODIFIERS) else "",
            "" if no_variant[i] else pools[product_aisle[i]][variant[i] % len(pools[product_aisle[i]])],
            noun,
        ]
        name = " ".join(p for p in parts if p)
        count = seen.get(name, 0) + 1
        seen[name] = count
        names.append(name if count == 1 else f"{name} {count}")

    name_order = np.argsort(np.array(names), kind="stable")  # ids alphabetical by name
    product_ids = np.empty(n_products, dtype=np.uint32)
    product_ids[name_order] = np.arange(1, n_products + 1, dtype=np.uint32)
    aisle_order = np.argsort(np.array(aisle_names), kind="stable")
    aisle_ids = np.empty(n_aisles, dtype=np.uint16)
    aisle_ids[aisle_order] = np.arange(1, n_aisles + 1, dtype=np.uint16)

    products = S.conform(
        S.PRODUCTS,
        pl.DataFrame(
            {
                S.PRODUCT: product_ids,
                S.PRODUCT_NAME: names,
                S.AISLE: aisle_ids[product_aisle],
                S.DEPARTMENT: (aisle_dept[product_aisle] + 1).astype(np.uint8),
            }
        ).sort(S.PRODUCT),
    )
    aisles = S.conform(S.AISLES, pl.DataFrame({S.AISLE: aisle_ids, S.AISLE_NAME: aisle_names}).sort(S.AISLE))
    departments = S.conform(
        S.DEPARTMENTS,
        pl.DataFrame(
            {
                S.DEPARTMENT: np.arange(1, len(dept_names) + 1, dtype=np.uint8),
                S.DEPARTMENT_NAME: dept_names,
            }
        ),
    )
    return _Catalog(
        n_aisles=n_aisles,
        aisle_dept=aisle_dept,
        aisle_prior=aisle_prior,
        aisle_start=aisle_start,
        explore_cdf=explore_cdf,
        staple_cdf=staple_cdf,
        product_dept=aisle_dept[product_aisle],
        product_ids=product_ids,
        dept_reorder_odds=odds,
        products=products,
        aisles=aisles,
        departments=departments,
    )


@dataclass
class _ChunkResult:
    """One chunk of users: orders in (user, order_number) order and their lines."""

    user_id: NDArray[np.uint32]  # per order
    order_number: NDArray[np.uint16]
    eval_code: NDArray[np.uint8]  # index into schema.EVAL_SETS
    dow: NDArray[np.uint8]
    hour: NDArray[np.uint8]
    days: NDArray[np.uint8]  # 0 where order_number == 1 (nulled later)
    line_order: NDArray[np.int64]  # chunk-local order index of each line
    line_product: NDArray[np.uint32]
    line_cart: NDArray[np.uint16]
    line_reordered: NDArray[np.uint8]


def _sample_offset(cdf: F64, group: I64, u: F64) -> I64:
    """Index into ``cdf`` (an :func:`_offset_cdf`) drawn within each ``group`` for uniforms ``u``."""
    idx = np.searchsorted(cdf, group + u, side="right")
    return np.minimum(idx, len(cdf) - 1)


def _rank_within(sorted_groups: I64) -> I64:
    """0-based position of each element within its run of equal values (input sorted)."""
    n = len(sorted_groups)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.concatenate(([True], sorted_groups[1:] != sorted_groups[:-1])))
    run_len = np.diff(np.concatenate((starts, [n])))
    return np.arange(n) - np.repeat(starts, run_len)


def _simulate_chunk(
    rng: np.random.Generator, cat: _Catalog, cfg: GeneratorConfig, first_user: int, n: int
) -> _ChunkResult:
    """Simulate users ``first_user .. first_user + n - 1`` (1-based ids) over all their orders."""
    A = cat.n_aisles
    n_slots = cfg.max_staples
    n_dept = len(_DEPARTMENTS)

    # --- per-user parameters --------------------------------------------------------------
    z = rng.standard_normal(n)
    rho = cfg.frequency_orders_corr
    shape = cfg.extra_orders_shape
    extra = rng.negative_binomial(shape, shape / (shape + cfg.extra_orders_mean), n)
    n_orders_draw = np.minimum(cfg.min_orders + extra, cfg.max_orders)
    # Gaussian copula: users with high z get many orders and short gaps
    z_orders = rho * z + np.sqrt(1 - rho**2) * rng.standard_normal(n)
    n_orders = np.empty(n, dtype=np.int64)
    n_orders[np.argsort(-z_orders, kind="stable")] = np.sort(n_orders_draw)[::-1]
    z_gap = rho * z + np.sqrt(1 - rho**2) * rng.standard_normal(n)
    gap_mean = cfg.gap_median * np.exp(-cfg.gap_sigma * z_gap)
    weekly = rng.beta(cfg.weekly_habit_a, cfg.weekly_habit_b, n)

    basket = cfg.basket_median * rng.lognormal(0.0, cfg.basket_sigma, n)
    loyalty = rng.beta(cfg.loyalty_a, cfg.loyalty_b, n)
    capacity = np.clip(np.rint(loyalty * basket / cfg.staple_effective_prob), 1, n_slots).astype(np.int64)
    explore_rate = (1 - loyalty) * basket

    dow_p = np.array(_DOW_SHARES) / sum(_DOW_SHARES)
    pref_dow = rng.choice(7, size=n, p=dow_p)
    dow_loyalty = rng.beta(cfg.dow_loyalty_a, cfg.dow_loyalty_b, n)
    hour_p = np.array(_HOUR_SHARES) / sum(_HOUR_SHARES)
    pref_hour = rng.choice(24, size=n, p=hour_p)
    is_train = rng.random(n) < cfg.train_share

    # taste: Dirichlet over departments, within each department a Dirichlet over its aisles
    dept_prior = np.bincount(cat.aisle_dept, weights=cat.aisle_prior, minlength=n_dept)
    dept_taste = rng.gamma(cfg.department_concentration * dept_prior, 1.0, (n, n_dept))
    dept_taste /= np.maximum(dept_taste.sum(1, keepdims=True), 1e-300)
    within_prior = cat.aisle_prior / dept_prior[cat.aisle_dept]
    aisle_gamma = rng.gamma(cfg.aisle_concentration * within_prior, 1.0, (n, A))
    dept_first_aisle = np.searchsorted(cat.aisle_dept, np.arange(n_dept))  # aisles grouped by dept
    dept_sums = np.add.reduceat(aisle_gamma, dept_first_aisle, axis=1)
    aisle_taste = aisle_gamma / np.maximum(dept_sums[:, cat.aisle_dept], 1e-300) * dept_taste[:, cat.aisle_dept]
    del aisle_gamma, dept_sums
    row_starts = np.arange(n + 1, dtype=np.int64) * A
    explore_aisle_cdf = _offset_cdf(aisle_taste.ravel() + 1e-12, row_starts)
    staple_w = aisle_taste * cat.dept_reorder_odds[cat.aisle_dept]
    staple_aisle_cdf = _offset_cdf(staple_w.ravel() + 1e-12, row_starts)
    del aisle_taste, staple_w, dept_taste

    # sort users by number of orders (descending): the users active at step t are a prefix
    perm = np.argsort(-n_orders, kind="stable")
    n_orders = n_orders[perm]
    gap_mean, weekly, capacity, explore_rate = (
        gap_mean[perm],
        weekly[perm],
        capacity[perm],
        explore_rate[perm],
    )
    pref_dow, dow_loyalty, pref_hour, is_train = (
        pref_dow[perm],
        dow_loyalty[perm],
        pref_hour[perm],
        is_train[perm],
    )
    # taste CDFs are per row in the original order; map sorted row -> original row when sampling
    orig_row = perm.astype(np.int64)
    order_start = np.concatenate(([0], np.cumsum(n_orders)))
    n_total = int(order_start[-1])
    active_at = np.searchsorted(-n_orders, -np.arange(1, cfg.max_orders + 1), side="right")  # t -> count

    # --- staple slots ------------------------------------------------------------------------
    slot_prod = np.full((n, n_slots), -1, dtype=np.int64)
    slot_q = np.zeros((n, n_slots), dtype=np.float32)
    slot_day = np.zeros((n, n_slots), dtype=np.float32)
    slot_ord = np.zeros((n, n_slots), dtype=np.float32)
    n_init = np.maximum(np.rint(capacity * cfg.initial_fill).astype(np.int64), 1)
    rows = np.repeat(np.arange(n), n_init)
    aisle = _sample_offset(staple_aisle_cdf, orig_row[rows], rng.random(len(rows))) - orig_row[rows] * A
    prod = _sample_offset(cat.staple_cdf, aisle, rng.random(len(rows)))
    key = np.unique(rows * cat.product_ids.size + prod)
    rows, prod = key // cat.product_ids.size, key % cat.product_ids.size
    slot = _rank_within(rows)
    slot_prod[rows, slot] = prod
    slot_q[rows, slot] = rng.beta(cfg.staple_prob_a, cfg.staple_prob_b, len(rows))
    slot_day[rows, slot] = -rng.uniform(0, 14, len(rows))  # "bought" shortly before the first order
    slot_ord[rows, slot] = -1

    # --- per-order outputs -----------------------------------------------------------------
    o_dow = np.empty(n_total, dtype=np.uint8)
    o_hour = np.empty(n_total, dtype=np.uint8)
    o_days = np.zeros(n_total, dtype=np.uint8)
    day = np.zeros(n, dtype=np.float64)
    out_order: list[I64] = []
    out_prod: list[I64] = []
    out_explore: list[NDArray[np.bool_]] = []
    n_prod = cat.product_ids.size
    floor = cfg.recency_floor

    for t in range(int(n_orders[0])):
        a = int(active_at[t])
        oidx = order_start[:a] + t
        # when
        if t > 0:
            g = rng.gamma(cfg.gap_shape, gap_mean[:a] / cfg.gap_shape)
            snap = rng.random(a) < weekly[:a]
            g = np.where(snap, 7 * np.maximum(np.rint(g / 7), 1), np.rint(g))
            gap = np.minimum(g, cfg.max_gap)
            day[:a] += gap
            o_days[oidx] = gap.astype(np.uint8)
        dow = np.where(rng.random(a) < dow_loyalty[:a], pref_dow[:a], rng.choice(7, a, p=dow_p))
        o_dow[oidx] = dow
        near = np.clip(np.rint(pref_hour[:a] + rng.normal(0, cfg.hour_spread, a)), 0, 23)
        hour = np.where(rng.random(a) < cfg.hour_loyalty, near, rng.choice(24, a, p=hour_p))
        o_hour[oidx] = hour

        # staples: Bernoulli(q * trip * recency)
        trip = rng.gamma(cfg.trip_shape, 1 / cfg.trip_shape, a).astype(np.float32)
        sp = slot_prod[:a]
        alive = sp >= 0
        since_days = day[:a, None].astype(np.float32) - slot_day[:a]
        since_orders = np.float32(t) - slot_ord[:a]
        decay = floor + (1 - floor) * np.exp(
            -since_days / np.float32(cfg.recency_days) - (since_orders - 1) / np.float32(cfg.recency_orders)
        )
        p = np.minimum(slot_q[:a] * decay * trip[:, None], np.float32(cfg.max_buy_prob))
        buy = alive & (rng.random((a, n_slots), dtype=np.float32) < p)

        # exploration: Poisson count, aisle from taste, product from popularity
        n_exp = rng.poisson(explore_rate[:a] * trip)
        n_exp += (n_exp == 0) & ~buy.any(axis=1)
        e_row = np.repeat(np.arange(a), n_exp)
        e_aisle = _sample_offset(explore_aisle_cdf, orig_row[e_row], rng.random(len(e_row))) - orig_row[e_row] * A
        e_prod = _sample_offset(cat.explore_cdf, e_aisle, rng.random(len(e_row)))
        # an explored product that is one of the user's staples counts as buying that staple
        hit = sp[e_row] == e_prod[:, None]
        is_staple = hit.any(axis=1)
        buy[e_row[is_staple], hit[is_staple].argmax(axis=1)] = True
        e_row, e_prod = e_row[~is_staple], e_prod[~is_staple]
        key = np.unique(e_row * n_prod + e_prod)  # distinct within the order, sorted by row
        e_row, e_prod = key // n_prod, key % n_prod

        s_row, s_slot = np.nonzero(buy)
        s_prod = sp[s_row, s_slot]
        out_order.append(np.concatenate((oidx[s_row], oidx[e_row])))
        out_prod.append(np.concatenate((s_prod, e_prod)))
        out_explore.append(np.concatenate((np.zeros(len(s_row), bool), np.ones(len(e_row), bool))))
        slot_day[:a][buy] = day[s_row]  # boolean assignment walks buy in np.nonzero order
        slot_ord[:a][buy] = t

        # interests fade: retire staples
        retire = alive & (rng.random((a, n_slots), dtype=np.float32) < cfg.retire_prob)
        sp[retire] = -1
        # adoption of newly explored products into free slots
        adopt = rng.random(len(e_row)) < cfg.adopt_prob * cat.dept_reorder_odds[cat.product_dept[e_prod]]
        c_row, c_prod = e_row[adopt], e_prod[adopt]
        if len(c_row):
            free = sp < 0
            room = np.maximum(capacity[:a] - (n_slots - free.sum(axis=1)), 0)
            c_rank = _rank_within(c_row)
            ok = c_rank < room[c_row]
            c_row, c_prod, c_rank = c_row[ok], c_prod[ok], c_rank[ok]
            if len(c_row):
                rows_u, pos = np.unique(c_row, return_inverse=True)
                free_order = np.argsort(~free[rows_u], axis=1, kind="stable")
                c_slot = free_order[pos, c_rank]
                sp[c_row, c_slot] = c_prod
                slot_q[c_row, c_slot] = rng.beta(cfg.staple_prob_a, cfg.staple_prob_b, len(c_row))
                slot_day[c_row, c_slot] = day[c_row]
                slot_ord[c_row, c_slot] = t

    # --- assemble the chunk --------------------------------------------------------------------
    user_row = np.repeat(np.arange(n), n_orders)
    order_number = (np.arange(n_total) - order_start[user_row] + 1).astype(np.uint16)
    is_last = order_number == n_orders[user_row]
    eval_code = np.where(is_last, np.where(is_train[user_row], _TRAIN_CODE, _TEST_CODE), _PRIOR_CODE)
    eval_code = eval_code.astype(np.uint8)

    line_order = np.concatenate(out_order)
    line_prod = np.concatenate(out_prod)
    line_explore = np.concatenate(out_explore)
    keep = eval_code[line_order] != _TEST_CODE  # no lines for test orders
    line_order, line_prod, line_explore = line_order[keep], line_prod[keep], line_explore[keep]

    # reordered: the user bought the product in an earlier order (orders of a user are contiguous)
    by_prod = np.argsort(line_prod * n_total + line_order, kind="stable")
    sp_prod = line_prod[by_prod]
    sp_user = user_row[line_order[by_prod]]
    first = np.ones(len(by_prod), dtype=bool)
    first[1:] = (sp_prod[1:] != sp_prod[:-1]) | (sp_user[1:] != sp_user[:-1])
    reordered = np.empty(len(by_prod), dtype=np.uint8)
    reordered[by_prod] = ~first

    # cart positions: staples tend to come first
    priority = rng.integers(0, 1024 - _EXPLORE_CART_OFFSET, len(line_order)) + _EXPLORE_CART_OFFSET * line_explore
    by_cart = np.argsort(line_order * 1024 + priority, kind="stable")
    cart = np.empty(len(by_cart), dtype=np.uint16)
    cart[by_cart] = (_rank_within(line_order[by_cart]) + 1).astype(np.uint16)

    return _ChunkResult(
        user_id=(first_user + perm[user_row]).astype(np.uint32),
        order_number=order_number,
        eval_code=eval_code,
        dow=o_dow,
        hour=o_hour,
        days=o_days,
        line_order=line_order,
        line_product=cat.product_ids[line_prod],
        line_cart=cart,
        line_reordered=reordered,
    )


def generate(n_users: int, seed: int, config: GeneratorConfig | None = None) -> Dataset:
    """Generate a synthetic :class:`Dataset` of ``n_users`` users (ids 1..n_users).

    ``seed`` fixes everything: the same ``(n_users, seed, config)`` gives identical frames.
    ``config`` defaults to :class:`GeneratorConfig` ``()``. The tables are already in the
    canonical dtypes; orders are sorted by (user_id, order_number), lines by (order_id, cart position).
    """
    if n_users < 1:
        raise ValueError(f"n_users must be >= 1, got {n_users}")
    cfg = config if config is not None else GeneratorConfig()
    if cfg.min_orders > cfg.max_orders:
        raise ValueError(f"min_orders {cfg.min_orders} > max_orders {cfg.max_orders}")
    root = np.random.SeedSequence(seed)
    cat_seq, ids_seq, users_seq = root.spawn(3)
    cat = _build_catalog(np.random.default_rng(cat_seq), cfg)

    n_chunks = -(-n_users // cfg.chunk_users)
    chunk_seqs = users_seq.spawn(n_chunks)
    chunks: list[_ChunkResult] = []
    for c in range(n_chunks):
        start = c * cfg.chunk_users
        size = min(cfg.chunk_users, n_users - start)
        chunks.append(_simulate_chunk(np.random.default_rng(chunk_seqs[c]), cat, cfg, start + 1, size))

    sizes = [len(ch.order_number) for ch in chunks]
    offsets = np.concatenate(([0], np.cumsum(sizes)))
    n_orders_total = int(offsets[-1])
    order_ids = (np.random.default_rng(ids_seq).permutation(n_orders_total) + 1).astype(np.uint32)

    def cat_orders(attr: str) -> NDArray[np.generic]:
        return np.concatenate([getattr(ch, attr) for ch in chunks])

    order_number = cat_orders("order_number")
    eval_code = cat_orders("eval_code")
    orders = pl.DataFrame(
        {
            S.ORDER: order_ids,
            S.USER: cat_orders("user_id"),
            S.EVAL_SET: pl.Series(eval_code).cat.to(S.EVAL_SET_DTYPE),
            S.ORDER_NUMBER: order_number,
            S.DOW: cat_orders("dow"),
            S.HOUR: cat_orders("hour"),
            S.DAYS_PRIOR: cat_orders("days"),
        }
    ).with_columns(pl.when(pl.col(S.ORDER_NUMBER) > 1).then(pl.col(S.DAYS_PRIOR)).otherwise(None).alias(S.DAYS_PRIOR))
    orders = S.conform(S.ORDERS, orders.sort(S.USER, S.ORDER_NUMBER))

    line_order = np.concatenate([ch.line_order + offsets[i] for i, ch in enumerate(chunks)])
    lines = pl.DataFrame(
        {
            S.ORDER: order_ids[line_order],
            S.PRODUCT: np.concatenate([ch.line_product for ch in chunks]),
            S.CART_POS: np.concatenate([ch.line_cart for ch in chunks]),
            S.REORDERED: np.concatenate([ch.line_reordered for ch in chunks]),
            S.EVAL_SET: pl.Series(eval_code[line_order]).cat.to(S.EVAL_SET_DTYPE),
        }
    )
    del line_order
    lines = S.conform(S.ORDER_PRODUCTS, lines.sort(S.ORDER, S.CART_POS))
    return Dataset(
        orders=orders,
        order_products=lines,
        products=cat.products,
        aisles=cat.aisles,
        departments=cat.departments,
    )
