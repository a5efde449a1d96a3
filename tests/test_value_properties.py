"""Properties of the pure valuation (tasks/value.py), checked with hypothesis."""

from __future__ import annotations

import json
from decimal import Decimal
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from models.enums import DiscrepancyKind, Valuation
from models.money import currency_exponent
from tasks.value import (
    LedgerPrice,
    Price,
    Tier,
    charge,
    price_from_stripe,
    price_to_stripe,
    value_discrepancy,
)

# Modest example counts: the whole file runs in a few seconds; database=None leaves no
# .hypothesis directory in the tree.
PROPERTY = settings(max_examples=150, deadline=None, database=None)

CURRENCIES = st.sampled_from(["usd", "eur", "jpy", "krw", "kwd", "bhd"])
#: Stripe's amounts: minor units with at most 12 decimal places.
AMOUNTS = st.decimals(min_value=0, max_value=100_000, places=12, allow_nan=False)
SMALL_AMOUNTS = st.decimals(min_value=0, max_value=1000, places=4, allow_nan=False)
#: Metered quantities, signed (a sum meter can fall below zero) and fractional.
QUANTITIES = st.decimals(min_value=-100, max_value=100_000, places=3, allow_nan=False)
POSITIVE = st.decimals(min_value="0.001", max_value=100_000, places=3, allow_nan=False)


def per_unit(
    unit: Decimal, *, currency: str = "usd", divide_by: int | None = None, round: str | None = None
) -> Price:
    return Price("price_unit", currency, "per_unit", unit, None, (), divide_by, round)


def tiered(mode: str, tiers: tuple[Tier, ...], *, currency: str = "usd") -> Price:
    return Price("price_tiers", currency, "tiered", None, mode, tiers, None, None)


@st.composite
def tier_lists(
    draw: st.DrawFn, *, flat: bool = True, amounts: st.SearchStrategy[Decimal] = SMALL_AMOUNTS
) -> tuple[Tier, ...]:
    bounds = sorted(draw(st.sets(st.integers(min_value=1, max_value=500), max_size=4)))
    ups: list[Decimal | None] = [Decimal(bound) for bound in bounds]
    ups.append(None)
    return tuple(
        Tier(
            up_to=up_to,
            unit_amount=draw(amounts),
            flat_amount=draw(amounts) if flat else Decimal(0),
        )
        for up_to in ups
    )


@st.composite
def prices(draw: st.DrawFn) -> Price:
    currency = draw(CURRENCIES)
    kind = draw(st.sampled_from(["per_unit", "transformed", "volume", "graduated"]))
    if kind == "per_unit":
        return per_unit(draw(AMOUNTS), currency=currency)
    if kind == "transformed":
        return per_unit(
            draw(AMOUNTS),
            currency=currency,
            divide_by=draw(st.integers(min_value=1, max_value=5000)),
            round=draw(st.sampled_from(["up", "down"])),
        )
    return tiered(kind, draw(tier_lists(amounts=AMOUNTS)), currency=currency)


def exact_stake(price: Price, stripe: Decimal, internal: Decimal) -> Fraction:
    """The unrounded amount, in rationals: an oracle free of Decimal contexts."""
    minor = Fraction(charge(price, stripe)) - Fraction(charge(price, internal))
    return minor / 10 ** currency_exponent(price.currency)


def mismatch(
    price: Price | None, stripe: Decimal, internal: Decimal, ledger: LedgerPrice | None = None
) -> Decimal:
    valued = value_discrepancy(
        kind=DiscrepancyKind.QUANTITY_MISMATCH,
        stripe_quantity=stripe,
        internal_quantity=internal,
        price=price,
        ledger_price=ledger,
    )
    assert valued.amount_at_stake is not None
    return valued.amount_at_stake


@PROPERTY
@given(unit=AMOUNTS, mode=st.sampled_from(["volume", "graduated"]), quantity=QUANTITIES)
def test_one_tier_without_a_flat_amount_is_per_unit(
    unit: Decimal, mode: str, quantity: Decimal
) -> None:
    one_tier = tiered(mode, (Tier(None, unit, Decimal(0)),))
    assert charge(one_tier, quantity) == charge(per_unit(unit), quantity)


@PROPERTY
@given(unit=SMALL_AMOUNTS, tiers=tier_lists(flat=False), quantity=QUANTITIES)
def test_tiers_that_all_charge_the_same_unit_amount_are_per_unit(
    unit: Decimal, tiers: tuple[Tier, ...], quantity: Decimal
) -> None:
    same = tuple(Tier(tier.up_to, unit, Decimal(0)) for tier in tiers)
    for mode in ("volume", "graduated"):
        assert charge(tiered(mode, same), quantity) == charge(per_unit(unit), quantity)


@PROPERTY
@given(tiers=tier_lists(), a=QUANTITIES, b=QUANTITIES)
def test_graduated_is_non_decreasing_in_the_quantity(
    tiers: tuple[Tier, ...], a: Decimal, b: Decimal
) -> None:
    low, high = sorted((a, b))
    price = tiered("graduated", tiers)
    assert charge(price, low) <= charge(price, high)


@PROPERTY
@given(tiers=tier_lists(), quantity=st.integers(min_value=0, max_value=700))
def test_graduated_charges_each_unit_at_its_tiers_amount(
    tiers: tuple[Tier, ...], quantity: int
) -> None:
    """Unit by unit: the n-th unit costs the amount of the tier holding n; a tier's flat
    amount is charged once its first unit is reached."""
    expected = Decimal(0)
    lower = 0
    for tier in tiers:
        upper = quantity if tier.up_to is None else min(quantity, int(tier.up_to))
        for _ in range(lower + 1, upper + 1):
            expected += tier.unit_amount
        if upper > lower:
            expected += tier.flat_amount
        lower = upper if tier.up_to is None else int(tier.up_to)
    assert charge(tiered("graduated", tiers), Decimal(quantity)) == expected


@PROPERTY
@given(tiers=tier_lists(), quantity=POSITIVE)
def test_volume_prices_every_unit_at_one_tiers_amount(
    tiers: tuple[Tier, ...], quantity: Decimal
) -> None:
    lows = [Decimal(0), *(tier.up_to for tier in tiers[:-1])]
    holding = [
        tier
        for low, tier in zip(lows, tiers, strict=True)
        if low is not None and low < quantity and (tier.up_to is None or quantity <= tier.up_to)
    ]
    assert len(holding) == 1
    tier = holding[0]
    assert charge(tiered("volume", tiers), quantity) == quantity * tier.unit_amount + (
        tier.flat_amount
    )


@PROPERTY
@given(price=prices(), quantity=st.decimals(max_value=0, min_value=-(10**6), places=3))
def test_no_price_charges_for_a_quantity_of_zero_or_less(price: Price, quantity: Decimal) -> None:
    assert charge(price, quantity) == 0


@PROPERTY
@given(unit=AMOUNTS, divide_by=st.integers(min_value=1, max_value=5000), quantity=POSITIVE)
def test_rounding_up_charges_at_most_one_pack_more_than_rounding_down(
    unit: Decimal, divide_by: int, quantity: Decimal
) -> None:
    up = charge(per_unit(unit, divide_by=divide_by, round="up"), quantity)
    down = charge(per_unit(unit, divide_by=divide_by, round="down"), quantity)
    whole_packs = quantity % divide_by == 0
    assert up - down == (0 if whole_packs else unit)
    packs = Fraction(quantity) / divide_by
    assert down == unit * int(packs)  # floor: positive quantities


@PROPERTY
@given(price=prices(), stripe=QUANTITIES, internal=QUANTITIES)
def test_the_amount_is_the_exact_value_rounded_half_even_to_six_places(
    price: Price, stripe: Decimal, internal: Decimal
) -> None:
    amount = mismatch(price, stripe, internal)
    assert amount.as_tuple().exponent == -6
    assert Fraction(amount) == round(exact_stake(price, stripe, internal), 6)  # half-even


@PROPERTY
@given(price=prices(), stripe=QUANTITIES, internal=QUANTITIES)
def test_swapping_the_quantities_negates_the_amount(
    price: Price, stripe: Decimal, internal: Decimal
) -> None:
    assert mismatch(price, stripe, internal) == -mismatch(price, internal, stripe)


@PROPERTY
@given(price=prices(), quantity=QUANTITIES)
def test_equal_quantities_are_worth_nothing(price: Price, quantity: Decimal) -> None:
    amount = mismatch(price, quantity, quantity)
    assert amount == 0
    assert not amount.is_signed()


@PROPERTY
@given(
    amount=st.decimals(min_value=-(10**6), max_value=10**6, places=4, allow_nan=False),
    quantity=st.decimals(min_value="0.001", max_value=10**5, places=3, allow_nan=False),
    stripe=QUANTITIES,
    internal=QUANTITIES,
)
def test_the_ledger_price_is_the_line_items_unit_price_rounded_once(
    amount: Decimal, quantity: Decimal, stripe: Decimal, internal: Decimal
) -> None:
    ledger = LedgerPrice(amount=amount, quantity=quantity, currency="usd")
    expected = round(
        (Fraction(stripe) - Fraction(internal)) * Fraction(amount) / Fraction(quantity), 6
    )
    assert Fraction(mismatch(None, stripe, internal, ledger)) == expected


@PROPERTY
@given(unit=AMOUNTS, currency=CURRENCIES, shared=st.decimals(0, 10**5, places=3))
def test_an_overlap_costs_its_shared_usage_at_the_unit_price(
    unit: Decimal, currency: str, shared: Decimal
) -> None:
    valued = value_discrepancy(
        kind=DiscrepancyKind.OVERLAPPING_LINE_ITEMS,
        stripe_quantity=shared,
        internal_quantity=None,
        price=per_unit(unit, currency=currency),
        ledger_price=None,
    )
    assert valued.valuation is Valuation.STRIPE_PRICE
    assert valued.currency == currency
    exact = -Fraction(shared) * Fraction(unit) / 10 ** currency_exponent(currency)
    assert valued.amount_at_stake is not None
    assert Fraction(valued.amount_at_stake) == round(exact, 6)


@PROPERTY
@given(price=prices())
def test_every_price_rebuilds_from_its_json_cache_form(price: Price) -> None:
    assert price_from_stripe(json.loads(json.dumps(price_to_stripe(price)))) == price


@PROPERTY
@given(units=st.integers(min_value=-(10**6), max_value=10**6))
def test_a_tie_at_the_seventh_place_goes_to_the_even_neighbour(units: int) -> None:
    # 0.00005 cents a unit: every odd number of units is a tie, 0.0000005 x an odd number.
    price = per_unit(Decimal("0.00005"))
    amount = mismatch(price, Decimal(max(units, 0)), Decimal(max(-units, 0)))
    assert Fraction(amount) == round(Fraction(units, 2_000_000), 6)
