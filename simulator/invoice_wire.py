"""Stripe's wire format of invoices and their line items (`invoice`, `line_item`).

Fields are those of stripe-mock's fixtures that Stripe's schema defines, plus the schema's
required ones (copies in `tests/data/`); `id`, `object`, then the rest alphabetically. An
invoice's total is the sum of its lines (no discounts, taxes, credits or shipping).
"""

from __future__ import annotations

from decimal import ROUND_DOWN, Decimal
from typing import Any

from models.money import decimal_to_json
from simulator.invoices import INLINE_LINES, InvoiceLineRecord, InvoiceRecord
from simulator.wire import list_object, price_object

# Stripe finalizes a subscription's draft invoice about an hour after creating it.
AUTO_FINALIZE_SECONDS = 3_600


def lines_url(invoice_id: str) -> str:
    return f"/v1/invoices/{invoice_id}/lines"


def _integer_part(quantity: Decimal) -> int:
    """`quantity`, the integer twin of `quantity_decimal`: its integer part."""
    return int(quantity.to_integral_value(rounding=ROUND_DOWN))


def line_object(line: InvoiceLineRecord, *, expand_price: bool = False) -> dict[str, Any]:
    """A `line_item` of a subscription item; its price an id, or the price when expanded."""
    price = line.price
    subscription = line.item.subscription
    return {
        "id": line.id,
        "object": "line_item",
        "amount": line.amount,
        "currency": price.currency,
        "description": line.description,
        "discount_amounts": [],
        "discountable": True,
        "discounts": [],
        "invoice": line.invoice,
        "livemode": False,
        "metadata": {},
        "parent": {
            "invoice_item_details": None,
            "subscription_item_details": {
                "invoice_item": None,
                "proration": line.proration,
                "proration_details": {"credited_items": None},
                "subscription": subscription,
                "subscription_item": line.item.id,
            },
            "type": "subscription_item_details",
        },
        "period": {"end": line.period_end, "start": line.period_start},
        "pretax_credit_amounts": [],
        "pricing": {
            "price_details": {
                "price": price_object(price) if expand_price else price.id,
                "product": price.product,
            },
            "type": "price_details",
            "unit_amount_decimal": (
                None
                if price.unit_amount_decimal is None
                else decimal_to_json(price.unit_amount_decimal)
            ),
        },
        "quantity": _integer_part(line.quantity_decimal),
        "quantity_decimal": decimal_to_json(line.quantity_decimal),
        "subscription": subscription,
        "subtotal": line.amount,
        "taxes": [],
    }


def lines_list(
    invoice_id: str, lines: list[InvoiceLineRecord], *, has_more: bool, expand_price: bool
) -> dict[str, Any]:
    """A page of an invoice's lines, Stripe's `InvoiceLinesList`."""
    data = [line_object(line, expand_price=expand_price) for line in lines]
    return list_object(data, has_more=has_more, url=lines_url(invoice_id))


def _amounts(invoice: InvoiceRecord) -> dict[str, int]:
    total = invoice.total
    due = max(total, 0)
    paid = due if invoice.status == "paid" else 0
    settled = invoice.status in ("paid", "void")
    return {
        "amount_due": due,
        "amount_overpaid": 0,
        "amount_paid": paid,
        "amount_paid_off_stripe": 0,
        "amount_remaining": 0 if settled else due - paid,
        "amount_shipping": 0,
    }


def invoice_object(invoice: InvoiceRecord, *, expand_price: bool = False) -> dict[str, Any]:
    """An `invoice`, its first lines inline (`lines.has_more` when there are more)."""
    draft = invoice.status == "draft"
    total = invoice.total
    inline = list(invoice.lines[:INLINE_LINES])
    parent = (
        None
        if invoice.subscription is None
        else {
            "quote_details": None,
            "subscription_details": {"metadata": {}, "subscription": invoice.subscription},
            "type": "subscription_details",
        }
    )
    return {
        "id": invoice.id,
        "object": "invoice",
        "account_country": "US",
        "account_name": None,
        "account_tax_ids": None,
        **_amounts(invoice),
        "application": None,
        "attempt_count": 0 if draft else 1,
        "attempted": not draft,
        "auto_advance": draft,
        "automatic_tax": {
            "disabled_reason": None,
            "enabled": False,
            "liability": None,
            "provider": None,
            "status": None,
        },
        "automatically_finalizes_at": invoice.created + AUTO_FINALIZE_SECONDS if draft else None,
        "billing_reason": "manual" if invoice.subscription is None else "subscription_cycle",
        "collection_method": "charge_automatically",
        "created": invoice.created,
        "currency": invoice.currency,
        "custom_fields": None,
        "customer": invoice.customer,
        "customer_account": None,
        "customer_address": None,
        "customer_email": None,
        "customer_name": None,
        "customer_phone": None,
        "customer_shipping": None,
        "customer_tax_exempt": "none",
        "customer_tax_ids": [],
        "default_payment_method": None,
        "default_source": None,
        "default_tax_rates": [],
        "description": None,
        "discounts": [],
        "due_date": None,
        "effective_at": invoice.finalized_at,
        "ending_balance": None if draft else 0,
        "footer": None,
        "from_invoice": None,
        "hosted_invoice_url": None,
        "invoice_pdf": None,
        "issuer": {"type": "self"},
        "last_finalization_error": None,
        "latest_revision": None,
        "lines": lines_list(
            invoice.id,
            inline,
            has_more=len(invoice.lines) > len(inline),
            expand_price=expand_price,
        ),
        "livemode": False,
        "metadata": {},
        "next_payment_attempt": None,
        "number": invoice.number,
        "on_behalf_of": None,
        "parent": parent,
        "payment_settings": {
            "default_mandate": None,
            "payment_method_options": None,
            "payment_method_types": None,
        },
        "period_end": invoice.period_end,
        "period_start": invoice.period_start,
        "post_payment_credit_notes_amount": 0,
        "pre_payment_credit_notes_amount": 0,
        "receipt_number": None,
        "rendering": None,
        "shipping_cost": None,
        "shipping_details": None,
        "starting_balance": 0,
        "statement_descriptor": None,
        "status": invoice.status,
        "status_transitions": {
            "finalized_at": invoice.finalized_at,
            "marked_uncollectible_at": invoice.marked_uncollectible_at,
            "paid_at": invoice.paid_at,
            "voided_at": invoice.voided_at,
        },
        "subtotal": total,
        "subtotal_excluding_tax": total,
        "test_clock": None,
        "total": total,
        "total_discount_amounts": [],
        "total_excluding_tax": total,
        "total_pretax_credit_amounts": [],
        "total_taxes": [],
        "webhooks_delivered_at": invoice.created,
    }
