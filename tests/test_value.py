"""The valuation of a discrepancy (tasks/value.py), with amounts computed by hand."""

from __future__ import annotations

import json
import re
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from models.enums import DiscrepancyKind, Valuation
from models.money import currency_exponent
from models.tables import InvoiceLineItem
from tasks.value import (
    NOT_VALUED,
    LedgerPrice,
    Price,
    Tier,
    UnsupportedPrice,
    Valued,
    charge,
    ledger_price_for_unbilled,
    ledger_price_of,
    price_from_stripe,
    price_to_stripe,
    value_discrepancy,
)

REFERENCE = json.loads(
    (Path(__file__).parent / "data" / "stripe_price_reference.json").read_text(encoding="utf-8")
)

MISMATCH = DiscrepancyKind.QUANTITY_MISMATCH
MISSING = DiscrepancyKind.MISSING_IN_STRIPE
UNBILLED = DiscrepancyKind.UNBILLED_USAGE
OVERLAP = DiscrepancyKind.OVERLAPPING_LINE_ITEMS


# --- Stripe price objects, as the API returns them ----------------------------------------


def per_unit(
    unit: str = "12.5",
    *,
    currency: str = "usd",
    divide_by: int | None = None,
    round: str = "up",
    id: str = "price_unit",
) -> dict[str, Any]:
    return {
        "id": id,
        "object": "price",
        "currency": currency,
        "billing_scheme": "per_unit",
        "tiers_mode": None,
        "unit_amount": None,
        "unit_amount_decimal": unit,
        "transform_quantity": (
            None if divide_by is None else {"divide_by": divide_by, "round": round}
        ),
    }


def tiered(
    mode: str,
    *tiers: tuple[int | None, str, str | None],
    currency: str = "usd",
    id: str = "price_tiers",
) -> dict[str, Any]:
    """A tiered price from (up_to, unit_amount_decimal, flat_amount_decimal) rows."""
    return {
        "id": id,
        "object": "price",
        "currency": currency,
        "billing_scheme": "tiered",
        "tiers_mode": mode,
        "unit_amount": None,
        "unit_amount_decimal": None,
        "transform_quantity": None,
        "tiers": [
            {
                "up_to": up_to,
                "unit_amount": None,
                "unit_amount_decimal": unit,
                "flat_amount": None,
                "flat_amount_decimal": flat,
            }
            for up_to, unit, flat in tiers
        ],
    }


# 1 c/unit to 10, then 0.80 c + a 5.00 flat fee to 100, then 0.50 c + a 10.00 flat fee.
STEPS = ((10, "100", None), (100, "80", "500"), (None, "50", "1000"))
VOLUME = tiered("volume", *STEPS)
GRADUATED = tiered("graduated", *STEPS)


def price(obj: dict[str, Any]) -> Price:
    return price_from_stripe(obj)


def value(
    kind: DiscrepancyKind,
    stripe: str,
    internal: str | None,
    *,
    stripe_price: dict[str, Any] | None = None,
    ledger: LedgerPrice | None = None,
) -> Valued:
    return value_discrepancy(
        kind=kind,
        stripe_quantity=Decimal(stripe),
        internal_quantity=None if internal is None else Decimal(internal),
        price=None if stripe_price is None else price_from_stripe(stripe_price),
        ledger_price=ledger,
    )


def billed(
    id: str, *, end: str, quantity: str, amount: str | None, currency: str | None
) -> InvoiceLineItem:
    """A ledger line item with its own price (the table row itself, as the flow loads it)."""
    return InvoiceLineItem(
        id=id,
        invoice_id="in_1",
        stripe_customer_id="cus_A",
        meter_id="mtr_api",
        period_start=date(2026, 10, 1),
        period_end=date.fromisoformat(end),
        quantity=Decimal(quantity),
        currency=currency,
        amount=None if amount is None else Decimal(amount),
    )


# --- V(q): Stripe's charge in minor units ---------------------------------------------------


@pytest.mark.parametrize(
    ("stripe_price", "quantity", "minor_units"),
    [
        # per_unit: q x unit_amount_decimal
        pytest.param(per_unit("12.5"), "10", "125", id="per-unit"),
        pytest.param(per_unit("12.5"), "2.5", "31.25", id="per-unit-fractional-quantity"),
        pytest.param(per_unit("0.000000000001"), "3", "0.000000000003", id="per-unit-12-places"),
        pytest.param(per_unit("12.5"), "0", "0", id="per-unit-zero-quantity"),
        pytest.param(per_unit("12.5"), "-5", "0", id="per-unit-negative-quantity-is-zero"),
        # transform_quantity, round up: ceil(q / divide_by) packs
        pytest.param(per_unit("500", divide_by=1000), "1", "500", id="up-one-unit-is-a-pack"),
        pytest.param(per_unit("500", divide_by=1000), "1000", "500", id="up-exactly-one-pack"),
        pytest.param(per_unit("500", divide_by=1000), "1001", "1000", id="up-one-over"),
        pytest.param(per_unit("500", divide_by=1000), "1000.5", "1000", id="up-fractional"),
        pytest.param(per_unit("500", divide_by=1000), "0", "0", id="up-zero"),
        pytest.param(per_unit("500", divide_by=1000), "-1", "0", id="up-negative"),
        # transform_quantity, round down: floor(q / divide_by) packs
        pytest.param(per_unit("500", divide_by=1000, round="down"), "999", "0", id="down-short"),
        pytest.param(per_unit("500", divide_by=1000, round="down"), "1000", "500", id="down-one"),
        pytest.param(
            per_unit("500", divide_by=1000, round="down"), "2999.9", "1000", id="down-fractional"
        ),
        # volume: the one tier holding q prices every unit, plus its flat amount
        pytest.param(VOLUME, "0.5", "50", id="volume-first-tier-fraction"),
        pytest.param(VOLUME, "10", "1000", id="volume-first-tier-bound-is-inclusive"),
        pytest.param(VOLUME, "11", "1380", id="volume-second-tier"),  # 11 x 80 + 500
        pytest.param(VOLUME, "100", "8500", id="volume-second-tier-bound"),  # 100 x 80 + 500
        pytest.param(VOLUME, "101", "6050", id="volume-last-tier"),  # 101 x 50 + 1000
        pytest.param(VOLUME, "0", "0", id="volume-zero"),
        pytest.param(VOLUME, "-3", "0", id="volume-negative"),
        # graduated: each tier prices the units inside it, plus its flat amount once entered
        pytest.param(GRADUATED, "5", "500", id="graduated-first-tier"),
        pytest.param(GRADUATED, "10", "1000", id="graduated-first-tier-full"),
        pytest.param(GRADUATED, "10.5", "1540", id="graduated-enters-second"),  # +0.5x80+500
        pytest.param(GRADUATED, "11", "1580", id="graduated-second-tier"),  # 1000 + 80 + 500
        pytest.param(GRADUATED, "100", "8700", id="graduated-second-full"),  # 1000+7200+500
        pytest.param(GRADUATED, "150", "12200", id="graduated-last-tier"),  # 8700+2500+1000
        pytest.param(GRADUATED, "0", "0", id="graduated-zero"),
        pytest.param(GRADUATED, "-1", "0", id="graduated-negative"),
        pytest.param(
            tiered("graduated", (1000, "0", "2000"), (None, "1", None)),
            "1500",
            "2500",
            id="graduated-flat-fee-then-per-unit",  # 2000 flat + 500 x 1
        ),
        pytest.param(
            tiered("volume", (None, "7", "300")), "4", "328", id="one-unbounded-tier-with-flat"
        ),
    ],
)
def test_charge_is_stripes_amount_in_minor_units(
    stripe_price: dict[str, Any], quantity: str, minor_units: str
) -> None:
    assert charge(price(stripe_price), Decimal(quantity)) == Decimal(minor_units)


def test_charge_is_exact_beyond_float_precision() -> None:
    huge = per_unit("0.123456789012")
    assert charge(price(huge), Decimal("123456789012345678.9")) == Decimal(
        "15241578753196160.3431672002468"
    )


def test_charge_refuses_a_float_quantity() -> None:
    with pytest.raises(TypeError, match="Decimal"):
        charge(price(per_unit()), 1.5)  # type: ignore[arg-type]


# --- Currency exponents -------------------------------------------------------------------


@pytest.mark.parametrize(
    "currency",
    [
        "bif",
        "clp",
        "djf",
        "gnf",
        "jpy",
        "kmf",
        "krw",
        "mga",
        "pyg",
        "rwf",
        "ugx",
        "vnd",
        "vuv",
        "xaf",
        "xof",
        "xpf",
    ],
)
def test_zero_decimal_currencies_have_exponent_0(currency: str) -> None:
    assert currency_exponent(currency) == 0


@pytest.mark.parametrize("currency", ["bhd", "jod", "kwd", "omr", "tnd"])
def test_three_decimal_currencies_have_exponent_3(currency: str) -> None:
    assert currency_exponent(currency) == 3


@pytest.mark.parametrize("currency", ["usd", "eur", "gbp", "chf", "huf"])
def test_other_currencies_have_exponent_2(currency: str) -> None:
    assert currency_exponent(currency) == 2


def test_currency_exponent_compares_the_code_lowercased() -> None:
    assert (currency_exponent("JPY"), currency_exponent("KWD"), currency_exponent("USD")) == (
        0,
        3,
        2,
    )


# --- Amount at stake with a Stripe price -----------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "stripe", "internal", "stripe_price", "amount", "currency"),
    [
        # (V(S) - V(I)) / 10^e, rounded half-even to 6 places at the end
        pytest.param(
            MISMATCH, "110", "100", per_unit("12.5"), "1.250000", "usd", id="per-unit-usd"
        ),  # (1375 - 1250) / 100
        pytest.param(
            MISMATCH, "90", "100", per_unit("12.5"), "-1.250000", "usd", id="over-billed-negative"
        ),
        pytest.param(
            MISSING, "0", "100", per_unit("12.5"), "-12.500000", "usd", id="missing-in-stripe"
        ),  # (0 - 1250) / 100
        pytest.param(
            MISMATCH, "1", "0", per_unit("0.00005"), "0.000000", "usd", id="half-even-down-to-0"
        ),  # 0.0000005: the tie goes to the even 0
        pytest.param(
            MISMATCH, "3", "0", per_unit("0.00005"), "0.000002", "usd", id="half-even-up-to-2"
        ),  # 0.0000015: the tie goes to the even 2
        pytest.param(
            MISMATCH, "5", "0", per_unit("0.00005"), "0.000002", "usd", id="half-even-down-to-2"
        ),  # 0.0000025 -> 0.000002
        pytest.param(
            MISMATCH, "3", "1", per_unit("0.00008"), "0.000002", "usd", id="above-half-rounds-up"
        ),  # 0.0000016 -> 0.000002
        pytest.param(
            MISMATCH, "3", "1", per_unit("0.00007"), "0.000001", "usd", id="below-half-rounds-down"
        ),  # 0.0000014 -> 0.000001
        pytest.param(
            MISSING, "0", "1", per_unit("0.00005"), "0.000000", "usd", id="no-negative-zero"
        ),  # -0.0000005 -> 0, not -0
        pytest.param(
            MISMATCH, "10", "4", per_unit("3", currency="jpy"), "18.000000", "jpy", id="jpy"
        ),  # 6 x 3 yen, exponent 0
        pytest.param(
            MISMATCH, "3", "1", per_unit("1250", currency="kwd"), "2.500000", "kwd", id="kwd"
        ),  # 2 x 1250 fils / 1000
        pytest.param(
            MISMATCH, "7", "0", per_unit("1", currency="KWD"), "0.007000", "kwd", id="kwd-upper"
        ),
        pytest.param(
            MISMATCH,
            "2500",
            "1500",
            per_unit("500", divide_by=1000),
            "5.000000",
            "usd",
            id="transform-up",
        ),  # ceil(2.5) = 3 packs, ceil(1.5) = 2 packs: 500 c
        pytest.param(
            MISMATCH,
            "2500",
            "1500",
            per_unit("500", divide_by=1000, round="down"),
            "5.000000",
            "usd",
            id="transform-down",
        ),  # floor(2.5) = 2 packs, floor(1.5) = 1 pack: 500 c
        pytest.param(
            MISMATCH,
            "1999",
            "1001",
            per_unit("500", divide_by=1000, round="down"),
            "0.000000",
            "usd",
            id="transform-down-same-pack",
        ),
        pytest.param(
            MISMATCH, "101", "100", VOLUME, "-24.500000", "usd", id="volume-cheaper-tier"
        ),  # (6050 - 8500) / 100: one more unit drops every unit to the cheaper tier
        pytest.param(
            MISMATCH, "150", "10", GRADUATED, "112.000000", "usd", id="graduated-flat-amounts"
        ),  # (12200 - 1000) / 100
        pytest.param(
            MISMATCH, "5", "-3", GRADUATED, "5.000000", "usd", id="negative-quantity-is-0"
        ),  # V(-3) = 0
        pytest.param(
            UNBILLED, "11", "0", GRADUATED, "15.800000", "usd", id="unbilled-day-alone"
        ),  # V(11) - V(0): the day alone enters the second tier
        pytest.param(
            UNBILLED, "11", None, GRADUATED, "15.800000", "usd", id="unbilled-no-internal"
        ),
        pytest.param(
            OVERLAP, "40", None, per_unit("12.5"), "-5.000000", "usd", id="overlap-per-unit"
        ),  # -(40 x 12.5) / 100
        pytest.param(
            OVERLAP, "0", None, per_unit("12.5"), "0.000000", "usd", id="overlap-no-usage"
        ),
        pytest.param(
            OVERLAP,
            "7",
            None,
            per_unit("3", currency="jpy"),
            "-21.000000",
            "jpy",
            id="overlap-jpy",
        ),
    ],
)
def test_amount_at_stake_with_a_stripe_price(
    kind: DiscrepancyKind,
    stripe: str,
    internal: str | None,
    stripe_price: dict[str, Any],
    amount: str,
    currency: str,
) -> None:
    valued = value(kind, stripe, internal, stripe_price=stripe_price)
    assert valued == Valued(Decimal(amount), currency, Valuation.STRIPE_PRICE)
    assert str(valued.amount_at_stake) == amount  # six places, never a negative zero


@pytest.mark.parametrize(
    "stripe_price",
    [
        pytest.param(per_unit("500", divide_by=1000), id="transform-up"),
        pytest.param(per_unit("500", divide_by=1000, round="down"), id="transform-down"),
        pytest.param(VOLUME, id="volume"),
        pytest.param(GRADUATED, id="graduated"),
    ],
)
def test_an_overlap_is_not_valued_with_a_price_that_has_no_one_unit_price(
    stripe_price: dict[str, Any],
) -> None:
    ledger = LedgerPrice(amount=Decimal("30"), quantity=Decimal("60"), currency="usd")
    assert value(OVERLAP, "40", None, stripe_price=stripe_price, ledger=ledger) == NOT_VALUED


def test_the_stripe_price_takes_precedence_over_the_ledger_price() -> None:
    ledger = LedgerPrice(amount=Decimal("999"), quantity=Decimal("1"), currency="eur")
    valued = value(MISMATCH, "110", "100", stripe_price=per_unit("12.5"), ledger=ledger)
    assert valued == Valued(Decimal("1.25"), "usd", Valuation.STRIPE_PRICE)


def test_a_changed_price_revalues_the_same_quantities() -> None:
    before = value(MISMATCH, "110", "100", stripe_price=per_unit("12.5"))
    after = value(MISMATCH, "110", "100", stripe_price=per_unit("20"))
    assert (before.amount_at_stake, after.amount_at_stake) == (Decimal("1.25"), Decimal("2"))


# --- Amount at stake with the ledger's price -------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "stripe", "internal", "ledger", "amount", "currency"),
    [
        # (S - I) x amount / quantity, in the line item's currency (already major units)
        pytest.param(
            MISMATCH, "12", "10", ("25.00", "10", "eur"), "5.000000", "eur", id="mismatch"
        ),
        pytest.param(MISSING, "0", "10", ("25.00", "10", "eur"), "-25.000000", "eur", id="missing"),
        pytest.param(
            MISMATCH, "4", "3", ("10", "3", "usd"), "3.333333", "usd", id="repeating-rounds-down"
        ),
        pytest.param(
            MISMATCH, "5", "3", ("10", "3", "usd"), "6.666667", "usd", id="repeating-rounds-up"
        ),
        pytest.param(
            MISMATCH, "1", "0", ("1", "2000000", "usd"), "0.000000", "usd", id="half-even-to-0"
        ),  # 0.0000005
        pytest.param(
            MISMATCH, "3", "0", ("1", "2000000", "usd"), "0.000002", "usd", id="half-even-to-2"
        ),  # 0.0000015
        pytest.param(
            MISMATCH, "-3", "0", ("1", "2000000", "usd"), "-0.000002", "usd", id="negative-tie"
        ),  # a signed meter: -0.0000015 -> -0.000002
        pytest.param(
            MISMATCH, "8", "10", ("1000", "10", "jpy"), "-200.000000", "jpy", id="jpy-is-major"
        ),  # the ledger's yen are yen: no exponent applies
        pytest.param(
            MISMATCH, "2", "0", ("-7.5", "3", "usd"), "-5.000000", "usd", id="credit-note"
        ),
        pytest.param(UNBILLED, "6", "0", ("25.00", "10", "EUR"), "15.000000", "eur", id="unbilled"),
        pytest.param(
            OVERLAP, "40", None, ("30", "60", "usd"), "-20.000000", "usd", id="overlap"
        ),  # -(40 x 30 / 60)
    ],
)
def test_amount_at_stake_with_the_ledger_price(
    kind: DiscrepancyKind,
    stripe: str,
    internal: str | None,
    ledger: tuple[str, str, str],
    amount: str,
    currency: str,
) -> None:
    line_price = LedgerPrice(
        amount=Decimal(ledger[0]), quantity=Decimal(ledger[1]), currency=ledger[2]
    )
    valued = value(kind, stripe, internal, ledger=line_price)
    assert valued == Valued(Decimal(amount), currency, Valuation.LEDGER_PRICE)
    assert str(valued.amount_at_stake) == amount


@pytest.mark.parametrize("kind", list(DiscrepancyKind))
def test_without_any_price_a_discrepancy_is_not_valued(kind: DiscrepancyKind) -> None:
    internal = None if kind is OVERLAP else "0" if kind is UNBILLED else "10"
    assert value(kind, "12", internal) == NOT_VALUED == Valued(None, None, None)


def test_a_mismatch_needs_its_internal_quantity() -> None:
    with pytest.raises(ValueError, match="internal quantity"):
        value(MISMATCH, "12", None, stripe_price=per_unit())


def test_unbilled_usage_bills_nothing() -> None:
    with pytest.raises(ValueError, match="bills nothing"):
        value(UNBILLED, "12", "3", stripe_price=per_unit())


def test_a_float_quantity_is_refused() -> None:
    with pytest.raises(TypeError, match="Decimal"):
        value_discrepancy(
            kind=MISMATCH,
            stripe_quantity=1.5,  # type: ignore[arg-type]
            internal_quantity=Decimal(1),
            price=price(per_unit()),
            ledger_price=None,
        )


# --- Which line item prices what -------------------------------------------------------------


def test_a_line_items_ledger_price_is_its_amount_for_its_quantity() -> None:
    item = billed("li_1", end="2026-11-01", quantity="10", amount="25.00", currency="EUR")
    assert ledger_price_of(item) == LedgerPrice(Decimal("25.00"), Decimal("10"), "eur")


@pytest.mark.parametrize(
    ("quantity", "amount", "currency"),
    [
        pytest.param("10", None, "eur", id="no-amount"),
        pytest.param("10", "25", None, id="no-currency"),
        pytest.param("10", "25", "", id="empty-currency"),
        pytest.param("0", "25", "eur", id="zero-quantity"),
    ],
)
def test_a_line_item_without_amount_currency_or_quantity_has_no_ledger_price(
    quantity: str, amount: str | None, currency: str | None
) -> None:
    item = billed("li_1", end="2026-11-01", quantity=quantity, amount=amount, currency=currency)
    assert ledger_price_of(item) is None


def test_unbilled_days_take_the_price_of_the_latest_priced_line_item() -> None:
    items = [
        billed("li_old", end="2026-10-01", quantity="10", amount="10", currency="usd"),
        billed("li_new", end="2026-11-01", quantity="10", amount="30", currency="usd"),
        billed("li_unpriced", end="2026-12-01", quantity="10", amount=None, currency="usd"),
        billed("li_no_currency", end="2026-12-01", quantity="10", amount="50", currency=None),
        billed("li_zero", end="2026-12-01", quantity="0", amount="50", currency="usd"),
    ]
    assert ledger_price_for_unbilled(items) == LedgerPrice(Decimal(30), Decimal(10), "usd")


def test_unbilled_days_break_a_tie_on_period_end_by_the_greater_id() -> None:
    a = billed("li_a", end="2026-11-01", quantity="10", amount="10", currency="usd")
    b = billed("li_b", end="2026-11-01", quantity="10", amount="20", currency="usd")
    expected = LedgerPrice(Decimal(20), Decimal(10), "usd")
    assert ledger_price_for_unbilled([a, b]) == ledger_price_for_unbilled([b, a]) == expected


def test_unbilled_days_of_a_pair_with_no_priced_line_item_have_no_ledger_price() -> None:
    items = [billed("li_1", end="2026-11-01", quantity="10", amount=None, currency=None)]
    assert ledger_price_for_unbilled(items) is None
    assert ledger_price_for_unbilled([]) is None


@pytest.mark.parametrize(
    ("amount", "quantity", "currency", "message"),
    [
        pytest.param("1", "0", "usd", "non-zero quantity", id="zero-quantity"),
        pytest.param("1", "2", "us dollars", "three-letter", id="bad-currency"),
        pytest.param("NaN", "2", "usd", "finite", id="nan-amount"),
    ],
)
def test_a_ledger_price_refuses_what_has_no_unit_price(
    amount: str, quantity: str, currency: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        LedgerPrice(amount=Decimal(amount), quantity=Decimal(quantity), currency=currency)


# --- Reading Stripe's price object ----------------------------------------------------------


def test_the_price_stripe_mock_serves_is_read_exactly() -> None:
    fixture = json.loads(json.dumps(REFERENCE["fixture"]), parse_float=Decimal)
    assert price_from_stripe(fixture) == Price(
        id="price_1PgafmB7WZ01zgkW6dKueIc5",
        currency="usd",
        billing_scheme="per_unit",
        unit_amount=Decimal(2000),
        tiers_mode=None,
        tiers=(),
        divide_by=1592560163,
        round="down",
    )


def test_unit_amount_decimal_is_preferred_to_the_integer_unit_amount() -> None:
    obj = per_unit("12.5") | {"unit_amount": 12}
    assert price(obj).unit_amount == Decimal("12.5")


def test_the_integer_unit_amount_is_the_fallback() -> None:
    obj = per_unit() | {"unit_amount_decimal": None, "unit_amount": 12}
    assert price(obj).unit_amount == Decimal(12)


def test_a_null_unit_amount_is_zero() -> None:
    obj = per_unit() | {"unit_amount_decimal": None, "unit_amount": None}
    assert price(obj).unit_amount == Decimal(0)


def test_tier_amounts_prefer_the_decimal_fields_and_a_null_amount_is_zero() -> None:
    obj = tiered("graduated", (10, "1.5", None), (None, None, "2.25"))
    obj["tiers"][0]["unit_amount"] = 1
    obj["tiers"][1]["unit_amount"] = 3
    obj["tiers"][1]["flat_amount"] = 2
    assert price(obj).tiers == (
        Tier(up_to=Decimal(10), unit_amount=Decimal("1.5"), flat_amount=Decimal(0)),
        Tier(up_to=None, unit_amount=Decimal(3), flat_amount=Decimal("2.25")),
    )


def test_amounts_parsed_as_decimal_json_numbers_are_accepted() -> None:
    obj = json.loads(
        '{"id": "price_1", "currency": "usd", "billing_scheme": "tiered",'
        ' "tiers_mode": "volume", "tiers": [{"up_to": 10, "unit_amount": 5,'
        ' "flat_amount": 1.5}, {"up_to": null, "unit_amount": 4, "flat_amount": null}]}',
        parse_float=Decimal,
    )
    assert price(obj).tiers[0] == Tier(Decimal(10), Decimal(5), Decimal("1.5"))


def test_a_price_currency_is_lowercased() -> None:
    assert price(per_unit(currency="JPY")).currency == "jpy"


def _replace(obj: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return obj | changes


def _with_tiers(*tiers: dict[str, Any]) -> dict[str, Any]:
    return GRADUATED | {"tiers": list(tiers)}


@pytest.mark.parametrize(
    ("obj", "complaint"),
    [
        pytest.param(_replace(per_unit(), billing_scheme="package"), "'package'", id="scheme"),
        pytest.param(_replace(per_unit(), billing_scheme=None), "billing_scheme", id="no-scheme"),
        pytest.param(_replace(GRADUATED, tiers_mode="stairstep"), "'stairstep'", id="tiers-mode"),
        pytest.param(_replace(GRADUATED, tiers_mode=None), "tiers_mode", id="no-tiers-mode"),
        pytest.param(
            {k: v for k, v in GRADUATED.items() if k != "tiers"}, "no tiers", id="not-expanded"
        ),
        pytest.param(_with_tiers(), "no tiers", id="empty-tiers"),
        pytest.param(
            _with_tiers({"up_to": 10, "unit_amount": 1}, {"up_to": 20, "unit_amount": 1}),
            "not with an unbounded tier",
            id="bounded-last-tier",
        ),
        pytest.param(
            _with_tiers({"up_to": None, "unit_amount": 1}, {"up_to": None, "unit_amount": 1}),
            "unbounded tier 1 before",
            id="unbounded-first-of-two",
        ),
        pytest.param(
            _with_tiers(
                {"up_to": 10, "unit_amount": 1},
                {"up_to": 10, "unit_amount": 1},
                {"up_to": None, "unit_amount": 1},
            ),
            "not above",
            id="repeated-up-to",
        ),
        pytest.param(
            _with_tiers(
                {"up_to": 20, "unit_amount": 1},
                {"up_to": 10, "unit_amount": 1},
                {"up_to": None, "unit_amount": 1},
            ),
            "not above",
            id="decreasing-up-to",
        ),
        pytest.param(
            _with_tiers({"up_to": 0, "unit_amount": 1}, {"up_to": None, "unit_amount": 1}),
            "positive integer",
            id="up-to-zero",
        ),
        pytest.param(
            _with_tiers({"up_to": "2.5", "unit_amount": 1}, {"up_to": None, "unit_amount": 1}),
            "positive integer",
            id="up-to-fraction",
        ),
        pytest.param(_with_tiers("tier"), "tier 1 of type str", id="tier-not-an-object"),
        pytest.param(
            _with_tiers({"up_to": None, "unit_amount_decimal": "-1"}),
            "not a non-negative decimal",
            id="negative-tier-amount",
        ),
        pytest.param(
            _with_tiers({"up_to": None, "flat_amount": 1.5}),
            "not a non-negative decimal",
            id="float-flat-amount",
        ),
        pytest.param(
            _replace(GRADUATED, transform_quantity={"divide_by": 10, "round": "up"}),
            "transforms its quantity",
            id="tiered-with-transform",
        ),
        pytest.param(
            _replace(GRADUATED, unit_amount_decimal="5"), "unit amount", id="tiered-unit-amount"
        ),
        pytest.param(
            _replace(per_unit(), tiers=[{"up_to": None, "unit_amount": 1}]),
            "has tiers",
            id="per-unit-with-tiers",
        ),
        pytest.param(
            _replace(per_unit(), tiers_mode="volume"), "has tiers", id="per-unit-tiers-mode"
        ),
        pytest.param(
            per_unit(divide_by=10, round="nearest"), "'nearest'", id="transform-round-nearest"
        ),
        pytest.param(per_unit(divide_by=0), "positive integer", id="divide-by-zero"),
        pytest.param(
            _replace(per_unit(), transform_quantity={"round": "up"}),
            "positive integer",
            id="no-divide-by",
        ),
        pytest.param(
            _replace(per_unit(), transform_quantity="up"), "not an object", id="transform-text"
        ),
        pytest.param(per_unit("twelve"), "'twelve'", id="amount-text"),
        pytest.param(per_unit("-5"), "'-5'", id="negative-amount"),
        pytest.param(per_unit("1e3"), "'1e3'", id="exponent-amount"),
        pytest.param(_replace(per_unit(), unit_amount_decimal=1.5), "1.5", id="float-amount"),
        pytest.param(_replace(per_unit(), unit_amount_decimal=True), "True", id="bool-amount"),
        pytest.param(
            _replace(per_unit(), unit_amount_decimal=Decimal("Infinity")),
            "Infinity",
            id="infinite-amount",
        ),
        pytest.param(_replace(per_unit(), currency="dollars"), "'dollars'", id="currency-word"),
        pytest.param(_replace(per_unit(), currency=None), "currency", id="no-currency"),
    ],
)
def test_a_price_that_is_not_understood_is_unsupported(obj: dict[str, Any], complaint: str) -> None:
    with pytest.raises(UnsupportedPrice) as raised:
        price_from_stripe(obj)
    message = str(raised.value)
    assert complaint in message
    assert repr(obj["id"]) in message  # it names the price
    assert message.endswith(".")
    assert "\n" not in message
    assert isinstance(raised.value, ValueError)


def test_a_price_without_an_id_is_unsupported() -> None:
    with pytest.raises(UnsupportedPrice, match="no id"):
        price_from_stripe(_replace(per_unit(), id=None))


def test_a_price_built_by_hand_is_checked_like_one_read_from_stripe() -> None:
    with pytest.raises(UnsupportedPrice, match="not above"):
        Price(
            id="price_hand",
            currency="usd",
            billing_scheme="tiered",
            unit_amount=None,
            tiers_mode="volume",
            tiers=(
                Tier(Decimal(5), Decimal(1), Decimal(0)),
                Tier(Decimal(5), Decimal(1), Decimal(0)),
                Tier(None, Decimal(1), Decimal(0)),
            ),
            divide_by=None,
            round=None,
        )


# --- The price cache's round trip -------------------------------------------------------------


ROUND_TRIP = [
    pytest.param(per_unit("12.5"), id="per-unit"),
    pytest.param(per_unit("0.000000000001", currency="KWD"), id="per-unit-12-places"),
    pytest.param(per_unit("500", divide_by=1000), id="transform-up"),
    pytest.param(per_unit("500", divide_by=1000, round="down"), id="transform-down"),
    pytest.param(VOLUME, id="volume"),
    pytest.param(GRADUATED, id="graduated"),
    pytest.param(REFERENCE["fixture"], id="stripe-mock"),
]


@pytest.mark.parametrize("obj", ROUND_TRIP)
def test_a_price_rebuilds_from_what_the_cache_stores(obj: dict[str, Any]) -> None:
    original = price_from_stripe(obj)
    stored = json.dumps(price_to_stripe(original))  # JSON-safe: no Decimal left in it
    assert price_from_stripe(json.loads(stored)) == original


@pytest.mark.parametrize("obj", ROUND_TRIP)
def test_what_the_cache_stores_writes_every_amount_as_plain_decimal_text(
    obj: dict[str, Any],
) -> None:
    original = price_from_stripe(obj)
    stored = json.loads(json.dumps(price_to_stripe(original)))
    written = [stored["unit_amount_decimal"]] + [
        tier[field]
        for tier in stored["tiers"] or []
        for field in ("unit_amount_decimal", "flat_amount_decimal")
    ]
    amounts = [original.unit_amount] + [
        amount for tier in original.tiers for amount in (tier.unit_amount, tier.flat_amount)
    ]
    assert [None if text is None else Decimal(text) for text in written] == amounts
    assert all(text is None or re.fullmatch(r"[0-9]+(\.[0-9]+)?", text) for text in written)


def test_what_the_cache_stores_uses_stripes_own_field_names() -> None:
    stored = price_to_stripe(price_from_stripe(GRADUATED))
    transformed = price_to_stripe(price_from_stripe(per_unit(divide_by=10)))
    assert set(stored) <= set(REFERENCE["price_properties"])
    assert set(stored["tiers"][0]) <= set(REFERENCE["price_tier_properties"])
    assert set(transformed["transform_quantity"]) == set(REFERENCE["transform_quantity_properties"])


def test_every_scheme_mode_and_round_stripe_documents_is_understood() -> None:
    enums = REFERENCE["enums"]
    prices = [per_unit(divide_by=10, round=r) for r in enums["round"]]
    prices += [tiered(mode, (None, "1", None)) for mode in enums["tiers_mode"]]
    assert {price(obj).billing_scheme for obj in prices} == set(enums["billing_scheme"])


@pytest.mark.parametrize(
    "up_to",
    [
        pytest.param(Decimal("2.5"), id="fraction"),
        pytest.param(Decimal(0), id="zero"),
        pytest.param(Decimal("NaN"), id="nan"),
    ],
)
def test_a_price_built_by_hand_needs_tiers_up_to_positive_integers(up_to: Decimal) -> None:
    with pytest.raises(UnsupportedPrice, match="not a positive integer"):
        Price(
            id="price_hand",
            currency="usd",
            billing_scheme="tiered",
            unit_amount=None,
            tiers_mode="graduated",
            tiers=(Tier(up_to, Decimal(1), Decimal(0)), Tier(None, Decimal(1), Decimal(0))),
            divide_by=None,
            round=None,
        )


def test_a_negative_zero_amount_is_stored_as_zero() -> None:
    hand = Price("price_hand", "usd", "per_unit", Decimal("-0"), None, (), None, None)
    stored = price_to_stripe(hand)
    assert stored["unit_amount_decimal"] == "0"
    assert price_from_stripe(stored) == hand
