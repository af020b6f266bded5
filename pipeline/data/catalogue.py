"""The static catalog of the synthetic generator: departments, aisles, product names and popularity.

The 21 real Instacart departments hold 134 aisles (plausible names, listed per department from the most to
the least popular). :func:`build_catalog` splits the products over departments in the real proportions and
over a department's aisles at random, gives every product a popularity (department share x Zipf aisle share
x Zipf product share with log-normal noise) and a name ("<modifier> <variant> <noun>", numbered when
repeated); product and aisle ids are alphabetical by name. :func:`offset_cdf` and :func:`sample_offset`
sample an element of a group (an aisle's products, a user's aisles) from per-group weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, NamedTuple, TypeVar

import numpy as np
import polars as pl
from numpy.typing import NDArray

from basketcast.pipeline.data import schema as S

__all__ = ["DEPARTMENT_NAMES", "Catalog", "build_catalog", "offset_cdf", "sample_offset"]

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]
_UInt = TypeVar("_UInt", np.uint16, np.uint32)


class _Department(NamedTuple):
    """One real Instacart department."""

    name: str
    n_products: int  # products in the real data
    line_share: float  # share of real prior lines, in %
    reorder_ratio: float  # real reorder ratio of its lines
    aisles: tuple[str, ...]  # from the most to the least popular


# Department ids are the list positions + 1, as in Kaggle.
# fmt: off
_DEPARTMENTS: Final[tuple[_Department, ...]] = (
    _Department("frozen", 4007, 6.9, 0.54, (
        "frozen meals", "frozen produce", "ice cream ice", "frozen pizza", "frozen breakfast",
        "frozen appetizers sides", "frozen meat seafood", "frozen vegan vegetarian", "frozen dessert",
        "frozen breads doughs", "frozen juice",
    )),
    _Department("other", 548, 0.1, 0.41, ("other",)),
    _Department("bakery", 1516, 3.6, 0.63, (
        "bread", "breakfast bakery", "buns rolls", "tortillas flat bread", "bakery desserts",
    )),
    _Department("produce", 1684, 29.2, 0.65, (
        "fresh fruits", "fresh vegetables", "packaged vegetables fruits", "fresh herbs", "packaged produce",
    )),
    _Department("alcohol", 1054, 0.5, 0.57, (
        "beers coolers", "red wines", "white wines", "spirits", "specialty wines champagnes",
    )),
    _Department("international", 1139, 0.8, 0.37, ("asian foods", "latino foods", "indian foods", "kosher foods")),
    _Department("beverages", 4365, 8.3, 0.65, (
        "water seltzer sparkling water", "soft drinks", "juice nectars", "refrigerated", "coffee", "tea",
        "energy sports drinks", "cocoa drink mixes",
    )),
    _Department("pets", 972, 0.3, 0.60, ("cat food care", "dog food care")),
    _Department("dry goods pasta", 1858, 2.7, 0.46, (
        "dry pasta", "pasta sauce", "instant foods", "grains rice dried goods", "fresh pasta",
    )),
    _Department("bulk", 38, 0.1, 0.58, ("bulk dried fruits vegetables", "bulk grains rice dried goods")),
    _Department("personal care", 6563, 1.4, 0.32, (
        "oral hygiene", "body lotions soap", "hair care", "vitamins supplements", "cold flu allergy", "skin care",
        "deodorants", "facial care", "feminine care", "first aid", "shave needs", "digestion",
        "muscles joints pain relief", "protein meal replacements", "eye ear care", "beauty", "sleep aids",
    )),
    _Department("meat seafood", 907, 2.2, 0.57, (
        "packaged poultry", "hot dogs bacon sausage", "poultry counter", "meat counter", "packaged meat",
        "seafood counter", "packaged seafood",
    )),
    _Department("pantry", 5371, 5.8, 0.35, (
        "baking ingredients", "spices seasonings", "condiments", "oils vinegars", "spreads", "preserved dips spreads",
        "honeys syrups nectars", "pickled goods olives", "salad dressing toppings", "marinades meat preparation",
        "doughs gelatins bake mixes", "baking supplies decor",
    )),
    _Department("breakfast", 1115, 2.2, 0.56, (
        "cereal", "breakfast bars pastries", "hot cereal pancake mixes", "granola",
    )),
    _Department("canned goods", 2092, 3.3, 0.46, (
        "soup broth bouillon", "canned meals beans", "canned jarred vegetables", "canned fruit applesauce",
        "canned meat seafood",
    )),
    _Department("dairy eggs", 3449, 16.7, 0.67, (
        "yogurt", "packaged cheese", "milk", "eggs", "soy lactosefree", "other creams cheeses", "cream", "butter",
        "refrigerated pudding desserts", "specialty cheeses",
    )),
    _Department("household", 3085, 2.3, 0.40, (
        "paper goods", "cleaning products", "dish detergents", "laundry", "food storage", "trash bags liners",
        "plates bowls cups flatware", "kitchen supplies", "air fresheners candles", "more household",
    )),
    _Department("babies", 1081, 1.3, 0.58, (
        "baby food formula", "diapers wipes", "baby bath body care", "baby accessories",
    )),
    _Department("snacks", 6264, 8.9, 0.57, (
        "chips pretzels", "crackers", "energy granola bars", "cookies cakes", "nuts seeds dried fruit",
        "candy chocolate", "popcorn jerky", "fruit vegetable snacks", "trail mix snack mix", "mint gum",
        "ice cream toppings",
    )),
    _Department("deli", 1322, 3.2, 0.61, (
        "lunch meat", "prepared soups salads", "fresh dips tapenades", "tofu meat alternatives", "prepared meals",
    )),
    _Department("missing", 1258, 0.2, 0.40, ("missing",)),
)
# fmt: on

DEPARTMENT_NAMES: Final[tuple[str, ...]] = tuple(d.name for d in _DEPARTMENTS)

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
# fmt: off
_MODIFIERS: Final[tuple[str, ...]] = (
    "Organic", "Natural", "Classic", "Original", "Family Size", "Low Fat", "Gluten Free", "Premium", "Homestyle",
    "Lite", "Simply", "Traditional", "Fresh", "Artisan", "Farmhouse", "Select",
)
_VARIANTS: Final[tuple[str, ...]] = (
    "Original", "Plain", "Mixed", "Mini", "Classic", "Sweet", "Unscented", "Everyday", "Assorted", "Family",
)
# fmt: on
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


@dataclass(frozen=True)
class Catalog:
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


def offset_cdf(weights: F64, group_start: I64) -> F64:
    """Per-group cumulative shares (each group ends at exactly 1) plus the group index.

    ``weights`` (shape ``(m,)``, non-negative) are grouped by ``group_start`` (shape ``(g + 1,)``: first index
    of each group, then ``m``). ``searchsorted(result, g + u, side="right")`` with ``u`` uniform in [0, 1) then
    samples an element of group ``g`` with probability proportional to its weight (see :func:`sample_offset`).
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


def sample_offset(cdf: F64, group: I64, u: F64) -> I64:
    """Index into ``cdf`` (an :func:`offset_cdf`) drawn within each ``group`` for uniforms ``u`` (same shape)."""
    idx = np.searchsorted(cdf, group + u, side="right")
    return np.minimum(idx, len(cdf) - 1)


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


def _department_weights(reorder_propensity_power: float) -> tuple[F64, F64, F64]:
    """Per department (shape ``(21,)``): real product counts, line shares (sum to 1), reorder odds.

    The odds are ``(r / (1 - r)) ** reorder_propensity_power`` for the real reorder ratio ``r``, normalized
    to a line-share-weighted mean of 1.
    """
    dept_products = np.array([d.n_products for d in _DEPARTMENTS], dtype=np.float64)
    dept_share = np.array([d.line_share for d in _DEPARTMENTS], dtype=np.float64)
    dept_share /= dept_share.sum()
    reorder = np.array([d.reorder_ratio for d in _DEPARTMENTS], dtype=np.float64)
    odds = (reorder / (1 - reorder)) ** reorder_propensity_power
    odds /= np.average(odds, weights=dept_share)
    return dept_products, dept_share, odds


def _aisle_layout(dept_share: F64, aisle_zipf: float) -> tuple[list[str], I64, F64]:
    """Aisles in catalog order (grouped by department): names, department index, global share.

    A department's ``dept_share`` (shape ``(21,)``) is split over its aisles by a Zipf law of exponent
    ``aisle_zipf``; the shares of all 134 aisles sum to 1.
    """
    aisle_names: list[str] = []
    aisle_dept_list: list[int] = []
    aisle_prior_list: list[float] = []
    for d, dept in enumerate(_DEPARTMENTS):
        w = 1.0 / np.arange(1, len(dept.aisles) + 1) ** aisle_zipf
        aisle_names.extend(dept.aisles)
        aisle_dept_list.extend([d] * len(dept.aisles))
        aisle_prior_list.extend((dept_share[d] * w / w.sum()).tolist())
    return aisle_names, np.array(aisle_dept_list, dtype=np.int64), np.array(aisle_prior_list, dtype=np.float64)


def _aisle_sizes(rng: np.random.Generator, dept_products: F64, aisle_dept: I64, n_products: int) -> I64:
    """Products per aisle (shape ``(n_aisles,)``, each >= 1, summing to ``n_products``).

    Departments get ``n_products`` in the real proportions ``dept_products``; each department splits its
    products over its aisles by a Dirichlet(4) draw (one ``rng.dirichlet`` per department, in order).
    """
    aisles_per_dept = np.bincount(aisle_dept, minlength=len(_DEPARTMENTS))
    n_dept_products = _largest_remainder(dept_products, n_products, minimum=aisles_per_dept)
    aisle_sizes = np.empty(len(aisle_dept), dtype=np.int64)
    for d in range(len(_DEPARTMENTS)):
        idx = np.flatnonzero(aisle_dept == d)
        split = rng.dirichlet(np.full(len(idx), 4.0))
        aisle_sizes[idx] = _largest_remainder(split, int(n_dept_products[d]), np.ones(len(idx), np.int64))
    return aisle_sizes


def _product_names(rng: np.random.Generator, aisle_names: list[str], aisle_dept: I64, product_aisle: I64) -> list[str]:
    """One name per catalog product (``product_aisle``: aisle index of each), "<modifier> <variant> <noun>".

    The modifier is missing for a few products and the variant for about a quarter; the noun comes from
    ``_AISLE_NOUNS`` or is the aisle name. A name already taken gets " 2", " 3", ... appended.
    """
    n_products = len(product_aisle)
    modifier = rng.integers(0, len(_MODIFIERS) + 3, n_products)  # a few without modifier
    variant = rng.integers(0, 1 << 30, n_products)
    no_variant = rng.random(n_products) < 0.25
    noun_pick = rng.integers(0, 1 << 30, n_products)
    pools = [_DEPT_VARIANTS.get(_DEPARTMENTS[d].name, _VARIANTS) for d in aisle_dept]
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
    return names


def _alphabetical_ids(names: list[str], dtype: type[_UInt]) -> NDArray[_UInt]:
    """Ids ``1..len(names)`` (of ``dtype``) assigned in alphabetical order of ``names`` (ties by position)."""
    order = np.argsort(np.array(names), kind="stable")
    ids = np.empty(len(names), dtype=dtype)
    ids[order] = np.arange(1, len(names) + 1, dtype=dtype)
    return ids


def _catalog_frames(
    names: list[str], aisle_names: list[str], aisle_dept: I64, product_aisle: I64
) -> tuple[NDArray[np.uint32], pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Product ids (per catalog product) and the products, aisles and departments tables.

    ``names`` and ``product_aisle`` have one entry per catalog product, ``aisle_names`` and ``aisle_dept``
    one per catalog aisle. Product and aisle ids are alphabetical by name; the tables are conformed to their
    schema and sorted by id.
    """
    product_ids = _alphabetical_ids(names, np.uint32)
    aisle_ids = _alphabetical_ids(aisle_names, np.uint16)
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
                S.DEPARTMENT: np.arange(1, len(DEPARTMENT_NAMES) + 1, dtype=np.uint8),
                S.DEPARTMENT_NAME: list(DEPARTMENT_NAMES),
            }
        ),
    )
    return product_ids, products, aisles, departments


def build_catalog(
    rng: np.random.Generator,
    *,
    n_products: int,
    aisle_zipf: float,
    product_zipf: float,
    popularity_noise: float,
    explore_popularity_power: float,
    staple_popularity_power: float,
    reorder_propensity_power: float,
) -> Catalog:
    """Departments, aisles and ``n_products`` products with their popularity (the knobs of GeneratorConfig).

    Draws from ``rng`` in this order: the split of products over aisles, the popularity noise, the names.
    """
    dept_products, dept_share, odds = _department_weights(reorder_propensity_power)
    aisle_names, aisle_dept, aisle_prior = _aisle_layout(dept_share, aisle_zipf)
    aisle_sizes = _aisle_sizes(rng, dept_products, aisle_dept, n_products)
    aisle_start = np.concatenate(([0], np.cumsum(aisle_sizes)))
    n_catalog = int(aisle_start[-1])
    product_aisle = np.repeat(np.arange(len(aisle_names)), aisle_sizes)
    rank = np.arange(n_catalog) - aisle_start[product_aisle] + 1
    popularity = rank**-product_zipf * rng.lognormal(0.0, popularity_noise, n_catalog)
    names = _product_names(rng, aisle_names, aisle_dept, product_aisle)
    product_ids, products, aisles, departments = _catalog_frames(names, aisle_names, aisle_dept, product_aisle)
    return Catalog(
        n_aisles=len(aisle_names),
        aisle_dept=aisle_dept,
        aisle_prior=aisle_prior,
        aisle_start=aisle_start,
        explore_cdf=offset_cdf(popularity**explore_popularity_power, aisle_start),
        staple_cdf=offset_cdf(popularity**staple_popularity_power, aisle_start),
        product_dept=aisle_dept[product_aisle],
        product_ids=product_ids,
        dept_reorder_odds=odds,
        products=products,
        aisles=aisles,
        departments=departments,
    )
