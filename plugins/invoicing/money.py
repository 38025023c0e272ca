"""The invoicing plugin's money and tax engine: a document's lines, allowances, charges, tax
breakdown and totals per EN 16931, in :class:`~decimal.Decimal` only, validated first.

Rounding order (EN 16931): each line's net amount and each document allowance or charge is
rounded to the currency's minor units; a tax category's basis is the sum of those rounded
amounts, and its tax is rounded ONCE from that basis (never summed from per-line tax); the
document totals are sums of rounded amounts and need no rounding of their own. Rounding is
commercial: half up (away from zero).
"""

from __future__ import annotations

import decimal
from collections.abc import Iterator
from contextlib import AbstractContextManager
from decimal import ROUND_HALF_UP, Decimal
from functools import cache

import babel.numbers

from crmcore import FieldError, ValidationError

from .model import (
    DEFAULT_EXEMPTION_REASONS,
    TAX_CATEGORIES,
    ZERO_RATE_CATEGORIES,
    AdjustmentInput,
    AdjustmentTotals,
    DocumentInput,
    LineInput,
    LineTotals,
    TaxSubtotal,
    Totals,
)

__all__ = ["minor_units", "round_money", "convert", "compute"]

#: Digits of the arithmetic: products of realistic quantities, prices and rates stay exact.
_PRECISION = 40
#: Decimals kept on a net unit price derived from a gross one (BT-146).
_PRICE_DECIMALS = 6
_HUNDRED = Decimal(100)

#: A line's or adjustment's tax: (category, rate).
_Group = tuple[str, Decimal]


def _arithmetic() -> AbstractContextManager[decimal.Context]:
    """A local context, so a caller's decimal settings neither change nor break our sums."""
    return decimal.localcontext(prec=_PRECISION, rounding=ROUND_HALF_UP)


@cache
def _iso_currencies() -> frozenset[str]:
    return frozenset(babel.numbers.list_currencies())


def _currency_error(currency: object) -> FieldError:
    return FieldError("currency", "invalid",
                      f"unknown currency {currency!r}; give a three-letter ISO 4217 code such as EUR")


def minor_units(currency: str) -> int:
    """The decimals of an ISO 4217 currency (EUR 2, JPY 0, KWD 3)."""
    if currency not in _iso_currencies():
        raise ValidationError([_currency_error(currency)])
    return babel.numbers.get_currency_precision(currency)


def _unit(decimals: int) -> Decimal:
    """One unit of the last of ``decimals`` places: 0.01 for 2, 1 for 0."""
    return Decimal((0, (1,), -decimals))


def round_money(value: Decimal, minor: int) -> Decimal:
    """``value`` rounded half up to exactly ``minor`` decimals ("10.00", never "10")."""
    with _arithmetic():
        return value.quantize(_unit(minor), rounding=ROUND_HALF_UP)


def convert(amount: Decimal, rate: Decimal, currency: str) -> Decimal:
    """``amount × rate`` rounded to ``currency``: the tax total in the seller's accounting
    currency (BT-111) from the document's tax total and its exchange rate."""
    minor = minor_units(currency)
    if not _is_number(rate) or rate <= 0:
        raise ValidationError([FieldError("exchange_rate", "invalid",
                                          "the exchange rate must be a number greater than 0")])
    with _arithmetic():
        return round_money(amount * rate, minor)


def compute(doc: DocumentInput) -> Totals:
    """The lines, allowances and charges, tax breakdown and totals of ``doc`` (EN 16931).

    Raises :class:`~crmcore.ValidationError` naming every wrong field at once; allowances beyond
    their category's lines (a negative tax basis) are found once everything else is valid."""
    with _arithmetic():
        errors = _document_errors(doc)
        if errors:
            raise ValidationError(errors)
        return _totals(doc, babel.numbers.get_currency_precision(doc.currency))


# --- validation --------------------------------------------------------------------------------


def _is_number(value: object) -> bool:
    return isinstance(value, Decimal) and value.is_finite()


def _number_error(field: str, value: object) -> FieldError | None:
    if _is_number(value):
        return None
    return FieldError(field, "invalid", f"must be a decimal number such as 19.99, not {value!r}")


def _percent_text(rate: Decimal) -> str:
    return f"{rate.normalize():f}%"


def _tax_errors(path: str, category: object, rate: object) -> list[FieldError]:
    """What is wrong with a tax category and its rate (UNCL 5305 as EN 16931 uses it)."""
    if category not in TAX_CATEGORIES:
        accepted = ", ".join(f"{code} ({meaning})" for code, meaning in TAX_CATEGORIES.items())
        return [FieldError(f"{path}.tax_category", "invalid",
                           f"unknown tax category {category!r}; accepted: {accepted}")]
    field = f"{path}.tax_rate"
    if (error := _number_error(field, rate)) is not None:
        return [error]
    assert isinstance(rate, Decimal)
    if not 0 <= rate < 100:
        return [FieldError(field, "invalid", "the tax rate is a percentage from 0 up to (not including) 100")]
    if category in ZERO_RATE_CATEGORIES and rate != 0:
        return [FieldError(field, "invalid", f"tax category {category} ({TAX_CATEGORIES[category]}) "
                                             f"has rate 0, not {_percent_text(rate)}")]
    if category == "S" and rate == 0:
        return [FieldError(field, "invalid", "tax category S (standard rate) needs a rate above 0; "
                                             "use Z for zero rated goods or E for exempt")]
    return []


def _line_errors(path: str, line: LineInput, minor: int | None) -> list[FieldError]:
    errors: list[FieldError] = []
    if not (line.description or "").strip():
        errors.append(FieldError(f"{path}.description", "required", "a line needs a description"))
    quantity_error = _number_error(f"{path}.quantity", line.quantity)
    if quantity_error is None and line.quantity <= 0:
        quantity_error = FieldError(f"{path}.quantity", "invalid",
                                    "quantity must be greater than 0; a correction is made with a credit note")
    price_error = _number_error(f"{path}.unit_price", line.unit_price)
    if price_error is None and line.unit_price < 0:
        price_error = FieldError(f"{path}.unit_price", "invalid",
                                 "the unit price must be 0 or more; a reduction is a discount")
    errors += [e for e in (quantity_error, price_error) if e is not None]
    errors += _tax_errors(path, line.tax_category, line.tax_rate)

    percent, amount = line.discount_percent, line.discount_amount
    if percent is not None:
        field = f"{path}.discount_percent"
        if (error := _number_error(field, percent)) is not None:
            errors.append(error)
        elif not 0 <= percent <= 100:
            errors.append(FieldError(field, "invalid", "the discount is a percentage from 0 to 100"))
    if amount is not None:
        field = f"{path}.discount_amount"
        if (error := _number_error(field, amount)) is not None:
            errors.append(error)
        elif amount < 0:
            errors.append(FieldError(field, "invalid", "the discount amount must be 0 or more"))
        elif quantity_error is None and price_error is None and minor is not None:
            gross = round_money(line.quantity * line.unit_price, minor)
            if amount > gross:
                errors.append(FieldError(field, "invalid",
                                         f"the discount amount must not exceed the line's amount ({gross})"))
        if percent is not None:
            errors.append(FieldError(field, "invalid", "give discount_percent or discount_amount, not both"))
    if line.charge_amount is not None:
        field = f"{path}.charge_amount"
        if (error := _number_error(field, line.charge_amount)) is not None:
            errors.append(error)
        elif line.charge_amount < 0:
            errors.append(FieldError(field, "invalid", "the charge amount must be 0 or more"))
    return errors


def _adjustment_errors(path: str, adjustment: AdjustmentInput, groups: list[_Group]) -> list[FieldError]:
    """``groups``: the (category, rate) pairs of the valid lines, which an adjustment must fit."""
    errors: list[FieldError] = []
    if not (adjustment.reason or "").strip():
        errors.append(FieldError(f"{path}.reason", "required",
                                 "say what the allowance or charge is for (e.g. 'Discount', 'Shipping')"))
    amount, percent = adjustment.amount, adjustment.percent
    if amount is None and percent is None:
        errors.append(FieldError(f"{path}.amount", "required", "give an amount or a percent"))
    if amount is not None and percent is not None:
        errors.append(FieldError(f"{path}.percent", "invalid", "give an amount or a percent, not both"))
    if percent is not None:
        if (error := _number_error(f"{path}.percent", percent)) is not None:
            errors.append(error)
        elif not 0 <= percent <= 100:
            errors.append(FieldError(f"{path}.percent", "invalid", "the percent is from 0 to 100"))
    if amount is not None:
        if (error := _number_error(f"{path}.amount", amount)) is not None:
            errors.append(error)
        elif amount < 0:
            errors.append(FieldError(f"{path}.amount", "invalid",
                                     "the amount must be 0 or more; an allowance is one with charge false"))

    category = adjustment.tax_category
    if category is None:
        if adjustment.tax_rate is not None:
            errors.append(FieldError(f"{path}.tax_category", "required", "a tax rate needs its tax category"))
        elif amount is not None and len(groups) > 1:
            found = ", ".join(f"{c} {_percent_text(r)}" for c, r in groups)
            errors.append(FieldError(f"{path}.tax_category", "required",
                                     f"the lines have several tax categories ({found}): "
                                     "say which one this amount applies to"))
        return errors
    rate = _adjustment_rate(adjustment)
    if rate is None and category in TAX_CATEGORIES:
        errors.append(FieldError(f"{path}.tax_rate", "required", f"tax category {category} needs its rate"))
        return errors
    tax_errors = _tax_errors(path, category, rate)
    if not tax_errors and groups and (category, rate) not in groups:
        field = "tax_rate" if any(c == category for c, _ in groups) else "tax_category"
        tax_errors.append(FieldError(f"{path}.{field}", "invalid",
                                     f"no line has tax category {category} at {_percent_text(rate)}"))
    return errors + tax_errors


def _adjustment_rate(adjustment: AdjustmentInput) -> Decimal | None:
    """The rate given, or 0 for a category that is always 0."""
    if adjustment.tax_rate is None and adjustment.tax_category in ZERO_RATE_CATEGORIES:
        return Decimal(0)
    return adjustment.tax_rate


def _document_errors(doc: DocumentInput) -> list[FieldError]:
    errors: list[FieldError] = []
    minor = None
    if doc.currency in _iso_currencies():
        minor = babel.numbers.get_currency_precision(doc.currency)
    else:
        errors.append(_currency_error(doc.currency))
    if not doc.lines:
        errors.append(FieldError("lines", "required", "an invoice needs at least one line"))
    groups: list[_Group] = []
    for i, line in enumerate(doc.lines):
        errors += _line_errors(f"lines[{i}]", line, minor)
        group = (line.tax_category, line.tax_rate)
        if not _tax_errors("", *group) and group not in groups:
            groups.append(group)
    for i, adjustment in enumerate(doc.adjustments):
        errors += _adjustment_errors(f"adjustments[{i}]", adjustment, groups)
    if (error := _number_error("prepaid", doc.prepaid)) is not None:
        errors.append(error)
    return errors


# --- computation (of a validated document) -----------------------------------------------------


def _line_totals(line: LineInput, minor: int, prices_include_tax: bool) -> LineTotals:
    gross_amount = round_money(line.quantity * line.unit_price, minor)
    if prices_include_tax:
        divisor = 1 + line.tax_rate / _HUNDRED
        net_price = (line.unit_price / divisor).quantize(_unit(_PRICE_DECIMALS))
    else:
        divisor, net_price = Decimal(1), line.unit_price
    base = round_money(line.quantity * net_price, minor)
    allowance = round_money(Decimal(0), minor)
    if line.discount_percent is not None:
        allowance = round_money(base * line.discount_percent / _HUNDRED, minor)
    elif line.discount_amount is not None:
        # A whole gross discount converted to net can round one unit above the net base.
        allowance = min(round_money(line.discount_amount / divisor, minor), base)
    charge = round_money((line.charge_amount or Decimal(0)) / divisor, minor)
    return LineTotals(net_price=_price(net_price, minor), gross_amount=gross_amount, allowance=allowance,
                      charge=charge, net_amount=base - allowance + charge)


def _price(value: Decimal, minor: int) -> Decimal:
    """A unit price without trailing zeros, but never fewer decimals than the currency's."""
    normal = value.normalize()
    return normal if normal.as_tuple().exponent <= -minor else normal.quantize(_unit(minor))


def _group_of(groups: dict[_Group, Decimal], category: str, rate: Decimal) -> _Group:
    """The lines' own (category, rate) key, so 19 and 19.00 print as the lines have it."""
    return next(group for group in groups if group == (category, rate))


def _adjustment_totals(adjustment: AdjustmentInput, groups: dict[_Group, Decimal], minor: int,
                       prices_include_tax: bool) -> Iterator[AdjustmentTotals]:
    """The adjustment as it goes on the invoice: one per tax category it applies to."""
    if adjustment.tax_category is None:
        targets = list(groups)  # an amount without a category: validated to be the only group
    else:
        rate = _adjustment_rate(adjustment)
        assert rate is not None
        targets = [_group_of(groups, adjustment.tax_category, rate)]
    for category, rate in targets:
        if adjustment.percent is not None:
            base = groups[category, rate]
            amount = round_money(base * adjustment.percent / _HUNDRED, minor)
            yield AdjustmentTotals(charge=adjustment.charge, reason=adjustment.reason, amount=amount,
                                   tax_category=category, tax_rate=rate, percent=adjustment.percent, base=base)
        else:
            assert adjustment.amount is not None
            net = adjustment.amount / (1 + rate / _HUNDRED) if prices_include_tax else adjustment.amount
            yield AdjustmentTotals(charge=adjustment.charge, reason=adjustment.reason,
                                   amount=round_money(net, minor), tax_category=category, tax_rate=rate)


def _totals(doc: DocumentInput, minor: int) -> Totals:
    zero = round_money(Decimal(0), minor)
    lines = [_line_totals(line, minor, doc.prices_include_tax) for line in doc.lines]
    line_sums: dict[_Group, Decimal] = {}  # in order of first appearance
    for line, totals in zip(doc.lines, lines):
        group = (line.tax_category, line.tax_rate)
        line_sums[group] = line_sums.get(group, zero) + totals.net_amount

    adjustments: list[AdjustmentTotals] = []
    basis = dict(line_sums)
    last_allowance: dict[_Group, int] = {}
    for i, adjustment in enumerate(doc.adjustments):
        for computed in _adjustment_totals(adjustment, line_sums, minor, doc.prices_include_tax):
            group = _group_of(line_sums, computed.tax_category, computed.tax_rate)
            basis[group] += computed.amount if computed.charge else -computed.amount
            if not computed.charge:
                last_allowance[group] = i
            adjustments.append(computed)
    overdrawn = [FieldError(f"adjustments[{last_allowance[group]}]", "invalid",
                            f"the allowances on tax category {group[0]} at {_percent_text(group[1])} exceed its "
                            f"lines and charges ({line_sums[group]}): the tax basis would be {amount}")
                 for group, amount in basis.items() if amount < 0]
    if overdrawn:
        raise ValidationError(overdrawn)

    breakdown = [TaxSubtotal(category=category, rate=rate, basis=amount,
                             tax=round_money(amount * rate / _HUNDRED, minor),
                             exemption_reason=DEFAULT_EXEMPTION_REASONS.get(category))
                 for (category, rate), amount in basis.items()]
    line_total = sum((line.net_amount for line in lines), zero)
    allowance_total = sum((a.amount for a in adjustments if not a.charge), zero)
    charge_total = sum((a.amount for a in adjustments if a.charge), zero)
    tax_basis_total = line_total - allowance_total + charge_total
    tax_total = sum((subtotal.tax for subtotal in breakdown), zero)
    grand_total = tax_basis_total + tax_total
    prepaid = round_money(doc.prepaid, minor)
    return Totals(currency=doc.currency, minor_units=minor, lines=lines, adjustments=adjustments,
                  breakdown=breakdown, line_total=line_total, allowance_total=allowance_total,
                  charge_total=charge_total, tax_basis_total=tax_basis_total, tax_total=tax_total,
                  grand_total=grand_total, prepaid=prepaid, rounding=zero, due=grand_total - prepaid)
