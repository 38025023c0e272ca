"""The money and tax engine (:mod:`plugins.invoicing.money`): properties that hold for any valid
document (hypothesis), worked examples computed by hand, and the errors bad input gets."""

from __future__ import annotations

import decimal
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal

import pytest
from hypothesis import given, reject, settings
from hypothesis import strategies as st

from crmcore import ValidationError
from plugins.invoicing.model import (
    EXEMPT_CATEGORIES,
    TAX_CATEGORIES,
    ZERO_RATE_CATEGORIES,
    AdjustmentInput,
    DocumentInput,
    LineInput,
    Totals,
)
from plugins.invoicing.money import compute, convert, minor_units, round_money

D = Decimal
#: The currencies the properties run over, with their minor units as ISO 4217 lists them.
MINOR = {"EUR": 2, "USD": 2, "JPY": 0, "KWD": 3}
TAXES = [("S", D("19")), ("S", D("7")), ("S", D("20")), ("S", D("5.5")),
         ("Z", D("0")), ("E", D("0")), ("AE", D("0"))]
PROPERTIES = settings(max_examples=200, deadline=None)


def unit(minor: int) -> Decimal:
    return D(1).scaleb(-minor)


def half_up(value: Decimal, minor: int) -> Decimal:
    """Commercial rounding, written here independently of the engine."""
    return value.quantize(unit(minor), rounding=ROUND_HALF_UP)


def numbers(maximum: int, max_places: int, *, positive: bool = False) -> st.SearchStrategy[Decimal]:
    """Decimals from 0 (or the smallest positive one) up to ``maximum``, with 0 to ``max_places``
    decimal places as people type them ("3", "2.5", "0.125")."""
    return st.integers(0, max_places).flatmap(
        lambda places: st.integers(1 if positive else 0, maximum * 10**places).map(lambda n: D(n).scaleb(-places)))


@st.composite
def line_inputs(draw, currency: str, plain: bool = False) -> LineInput:
    """A valid line; ``plain``: without discount or charge."""
    minor = MINOR[currency]
    category, rate = draw(st.sampled_from(TAXES))
    quantity = draw(numbers(1000, 3, positive=True))
    price = draw(numbers(10_000, 4))
    discount_percent = discount_amount = charge = None
    if not plain:
        discount = draw(st.sampled_from(["none", "percent", "amount"]))
        if discount == "percent":
            discount_percent = draw(numbers(100, 2))
        elif discount == "amount":  # at most the line's amount: a share of it, rounded down
            share = draw(numbers(1, 2))
            discount_amount = (quantity * price * share).quantize(unit(minor), rounding=ROUND_DOWN)
        charge = draw(st.none() | numbers(50, minor + 1))
    return LineInput(description="Item", quantity=quantity, unit_price=price, tax_category=category,
                     tax_rate=rate, discount_percent=discount_percent, discount_amount=discount_amount,
                     charge_amount=charge)


@st.composite
def adjustment_inputs(draw, currency: str, groups: list[tuple[str, Decimal]]) -> AdjustmentInput:
    """A valid document allowance or charge for lines with these (category, rate) groups."""
    charge = draw(st.booleans())
    by_percent = draw(st.booleans())
    # An amount needs a category unless the lines have only one.
    targeted = draw(st.booleans()) or (not by_percent and len(groups) > 1)
    category = rate = None
    if targeted:
        category, rate = draw(st.sampled_from(groups))
        if category in ZERO_RATE_CATEGORIES and draw(st.booleans()):
            rate = None  # a zero-rate category's rate may be left out
    value = draw(numbers(25, 2) if by_percent else numbers(20, MINOR[currency] + 1))
    return AdjustmentInput(charge=charge, reason="Shipping" if charge else "Discount",
                           amount=None if by_percent else value, percent=value if by_percent else None,
                           tax_category=category, tax_rate=rate)


@st.composite
def documents(draw, *, plain: bool = False, prices_include_tax: bool | None = None) -> DocumentInput:
    """A valid document over EUR, USD, JPY, KWD; ``plain``: no discounts, charges, adjustments."""
    currency = draw(st.sampled_from(list(MINOR)))
    lines = draw(st.lists(line_inputs(currency, plain), min_size=1, max_size=8))
    groups = list(dict.fromkeys((line.tax_category, line.tax_rate) for line in lines))
    adjustments = [] if plain else draw(st.lists(adjustment_inputs(currency, groups), max_size=3))
    gross = draw(st.booleans()) if prices_include_tax is None else prices_include_tax
    return DocumentInput(currency=currency, lines=lines, adjustments=adjustments, prices_include_tax=gross,
                         prepaid=draw(numbers(100, MINOR[currency] + 1)))


def computed(doc: DocumentInput) -> Totals:
    """``compute(doc)``; a generated document may only be refused for allowances that exceed
    their category's lines (which the strategies cannot foresee), and is then skipped."""
    try:
        return compute(doc)
    except ValidationError as error:
        if all(e.field.startswith("adjustments[") and "exceed" in e.message for e in error.errors):
            reject()
        raise


def group_of(line: LineInput) -> tuple[str, Decimal]:
    return line.tax_category, line.tax_rate


# --- properties --------------------------------------------------------------------------------


@PROPERTIES
@given(documents())
def test_totals_are_the_sums_of_their_parts(doc: DocumentInput):
    totals = computed(doc)
    allowances = [a.amount for a in totals.adjustments if not a.charge]
    charges = [a.amount for a in totals.adjustments if a.charge]
    assert totals.line_total == sum(line.net_amount for line in totals.lines)
    assert totals.allowance_total == sum(allowances)
    assert totals.charge_total == sum(charges)
    assert totals.tax_basis_total == sum(subtotal.basis for subtotal in totals.breakdown)
    assert totals.tax_basis_total == totals.line_total - totals.allowance_total + totals.charge_total
    assert totals.tax_total == sum(subtotal.tax for subtotal in totals.breakdown)
    assert totals.grand_total == totals.tax_basis_total + totals.tax_total
    assert totals.prepaid == half_up(doc.prepaid, MINOR[doc.currency])
    assert totals.rounding == 0
    assert totals.due == totals.grand_total - totals.prepaid
    assert len(totals.lines) == len(doc.lines)


@PROPERTIES
@given(documents())
def test_each_category_is_taxed_once_on_its_own_basis(doc: DocumentInput):
    """One breakdown row per (category, rate) of the lines in order of first appearance; its
    basis is its lines − allowances + charges, and its tax that basis times the rate, rounded."""
    totals = computed(doc)
    minor = MINOR[doc.currency]
    assert [(s.category, s.rate) for s in totals.breakdown] == list(dict.fromkeys(map(group_of, doc.lines)))
    for subtotal in totals.breakdown:
        group = (subtotal.category, subtotal.rate)
        lines = sum(t.net_amount for line, t in zip(doc.lines, totals.lines) if group_of(line) == group)
        adjustments = [a for a in totals.adjustments if (a.tax_category, a.tax_rate) == group]
        assert subtotal.basis == (lines - sum(a.amount for a in adjustments if not a.charge)
                                  + sum(a.amount for a in adjustments if a.charge))
        assert subtotal.tax == half_up(subtotal.basis * subtotal.rate / 100, minor)
        assert (subtotal.exemption_reason is not None) == (subtotal.category in EXEMPT_CATEGORIES)
        for adjustment in adjustments:
            if adjustment.percent is not None:  # a percent is of its category's lines
                assert adjustment.base == lines
                assert adjustment.amount == half_up(lines * adjustment.percent / 100, minor)


@PROPERTIES
@given(documents())
def test_every_amount_has_the_currency_decimals(doc: DocumentInput):
    totals = computed(doc)
    minor = MINOR[doc.currency]
    amounts = [totals.line_total, totals.allowance_total, totals.charge_total, totals.tax_basis_total,
               totals.tax_total, totals.grand_total, totals.prepaid, totals.rounding, totals.due]
    for line in totals.lines:
        amounts += [line.gross_amount, line.allowance, line.charge, line.net_amount]
        assert line.net_price.as_tuple().exponent <= -minor  # a price may have more decimals
    for adjustment in totals.adjustments:
        amounts += [adjustment.amount] + ([adjustment.base] if adjustment.base is not None else [])
    for subtotal in totals.breakdown:
        amounts += [subtotal.basis, subtotal.tax]
    assert totals.minor_units == minor
    assert {amount.as_tuple().exponent for amount in amounts} == {-minor}


@PROPERTIES
@given(documents(prices_include_tax=False))
def test_net_entry_lines_are_gross_less_allowance_plus_charge(doc: DocumentInput):
    totals = computed(doc)
    minor = MINOR[doc.currency]
    for line, computed_line in zip(doc.lines, totals.lines):
        assert computed_line.net_price == line.unit_price
        assert computed_line.gross_amount == half_up(line.quantity * line.unit_price, minor)
        assert computed_line.net_amount == computed_line.gross_amount - computed_line.allowance + computed_line.charge


@PROPERTIES
@given(documents(plain=True, prices_include_tax=True))
def test_gross_entry_drifts_by_rounding_only(doc: DocumentInput):
    """Prices with tax included are taken back to net and taxed per category; the grand total
    then differs from the gross amounts entered by rounding only, a bounded drift: per line
    half a unit (the gross amount) plus half a unit times (1 + rate) (its net amount), per
    category half a unit (its tax); two units per line and one per category bound it."""
    totals = computed(doc)
    minor = MINOR[doc.currency]
    entered = sum(half_up(line.quantity * line.unit_price, minor) for line in doc.lines)
    assert abs(totals.grand_total - entered) <= (2 * len(doc.lines) + len(totals.breakdown)) * unit(minor)


# --- worked examples ---------------------------------------------------------------------------


def line(quantity: str, price: str, category: str = "S", rate: str = "19", **more) -> LineInput:
    return LineInput(description="Item", quantity=D(quantity), unit_price=D(price), tax_category=category,
                     tax_rate=D(rate), **more)


def test_eur_two_rates_with_a_document_allowance():
    """3 × 19.99 at S 19% = 59.97; 1 × 0.50 at S 7% = 0.50. The 10% allowance is split per rate:
    59.97 × 10% = 5.997 → 6.00 and 0.50 × 10% = 0.05. Bases 53.97 and 0.45; tax 53.97 × 19% =
    10.2543 → 10.25 and 0.45 × 7% = 0.0315 → 0.03. Basis 54.42 + tax 10.28 = 64.70."""
    totals = compute(DocumentInput(currency="EUR", lines=[line("3", "19.99"), line("1", "0.50", rate="7")],
                                   adjustments=[AdjustmentInput(reason="Loyalty", percent=D("10"))]))
    assert [(a.tax_rate, a.base, a.amount) for a in totals.adjustments] == [
        (D("19"), D("59.97"), D("6.00")), (D("7"), D("0.50"), D("0.05"))]
    assert [(s.rate, s.basis, s.tax) for s in totals.breakdown] == [
        (D("19"), D("53.97"), D("10.25")), (D("7"), D("0.45"), D("0.03"))]
    assert (totals.line_total, totals.allowance_total, totals.charge_total) == (D("60.47"), D("6.05"), D("0"))
    assert (totals.tax_basis_total, totals.tax_total) == (D("54.42"), D("10.28"))
    assert str(totals.grand_total) == str(totals.due) == "64.70"
    assert str(totals.charge_total) == str(totals.prepaid) == str(totals.rounding) == "0.00"


def test_charges_exempt_lines_and_prepaid():
    """2 × 50.00 + a 3.00 line charge = 103.00 at S 19%; 1 × 20.00 exempt. Shipping 10.00 at S 19%
    and a 5.00 allowance on the exempt line (its rate left out: exempt is always 0). S basis
    113.00, tax 21.47; E basis 15.00, tax 0. Basis 128.00 + 21.47 = 149.47; 50 prepaid → 99.47."""
    totals = compute(DocumentInput(
        currency="EUR", prepaid=D("50"),
        lines=[line("2", "50.00", charge_amount=D("3")), line("1", "20", category="E", rate="0")],
        adjustments=[AdjustmentInput(charge=True, reason="Shipping", amount=D("10"), tax_category="S",
                                     tax_rate=D("19")),
                     AdjustmentInput(reason="Goodwill", amount=D("5"), tax_category="E")]))
    assert [(t.charge, t.net_amount) for t in totals.lines] == [(D("3.00"), D("103.00")), (D("0"), D("20.00"))]
    assert [(s.category, s.basis, s.tax, s.exemption_reason) for s in totals.breakdown] == [
        ("S", D("113.00"), D("21.47"), None), ("E", D("15.00"), D("0.00"), "Exempt from tax")]
    assert (totals.allowance_total, totals.charge_total, totals.tax_basis_total) == (D("5"), D("10"), D("128"))
    assert (totals.grand_total, totals.prepaid, totals.due) == (D("149.47"), D("50.00"), D("99.47"))


def test_jpy_has_no_decimals():
    """2.5 × ¥399 = 997.5 → ¥998 at 10%; ¥150 at 8%; ¥500 shipping at 10%. 10%: 1498 → tax 149.8
    → 150; 8%: 150 → 12. Basis 1648 + tax 162 = ¥1810."""
    totals = compute(DocumentInput(
        currency="JPY", lines=[line("2.5", "399", rate="10"), line("1", "150", rate="8")],
        adjustments=[AdjustmentInput(charge=True, reason="Shipping", amount=D("500"), tax_category="S",
                                     tax_rate=D("10"))]))
    assert totals.minor_units == 0
    assert [str(t.net_amount) for t in totals.lines] == ["998", "150"]
    assert [(str(s.basis), str(s.tax)) for s in totals.breakdown] == [("1498", "150"), ("150", "12")]
    assert (str(totals.tax_basis_total), str(totals.tax_total), str(totals.grand_total)) == ("1648", "162", "1810")


def test_kwd_has_three_decimals():
    """7 × 1.2345 = 8.6415 → 8.642, less 10% (0.8642 → 0.864) = 7.778 at 5%: tax 0.3889 → 0.389.
    1 × 0.0005 zero rated → 0.001. Lines 7.779 + tax 0.389 = 8.168."""
    totals = compute(DocumentInput(currency="KWD", lines=[line("7", "1.2345", rate="5", discount_percent=D("10")),
                                                          line("1", "0.0005", category="Z", rate="0")]))
    assert [(str(t.gross_amount), str(t.allowance), str(t.net_amount)) for t in totals.lines] == [
        ("8.642", "0.864", "7.778"), ("0.001", "0.000", "0.001")]
    assert [str(s.tax) for s in totals.breakdown] == ["0.389", "0.000"]
    assert (str(totals.line_total), str(totals.tax_total), str(totals.grand_total)) == ("7.779", "0.389", "8.168")


def test_rounding_is_half_up_not_to_even():
    """0.125 → 0.13 (to even: 0.12); 0.10 at 5% = 0.005 → 0.01 (to even: 0.00)."""
    assert round_money(D("0.125"), 2) == D("0.13")
    assert round_money(D("-0.125"), 2) == D("-0.13")
    assert round_money(D("2.5"), 0) == D("3")
    assert str(round_money(D("10"), 2)) == "10.00"
    assert str(round_money(D("0.0005"), 3)) == "0.001"
    totals = compute(DocumentInput(currency="EUR", lines=[line("1", "0.125"), line("1", "0.10", rate="5")]))
    assert totals.lines[0].net_amount == D("0.13")
    assert totals.breakdown[1].tax == D("0.01")


def test_tax_is_rounded_once_per_category_not_per_line():
    """Three lines of 0.10 at 5%: per line 0.005 → 0.01, summed 0.03; EN 16931 taxes the basis
    0.30 once: 0.015 → 0.02."""
    totals = compute(DocumentInput(currency="EUR", lines=[line("1", "0.10", rate="5")] * 3))
    assert len(totals.breakdown) == 1
    assert (totals.breakdown[0].basis, totals.breakdown[0].tax) == (D("0.30"), D("0.02"))


def test_equal_rates_written_differently_are_one_category():
    totals = compute(DocumentInput(currency="EUR", lines=[line("1", "10", rate="19"), line("1", "10", rate="19.00")]))
    assert [(s.rate, s.basis, s.tax) for s in totals.breakdown] == [(D("19"), D("20.00"), D("3.80"))]


def test_gross_entry():
    """3 × 9.99 incl. 19%: net price 9.99 / 1.19 = 8.394957983… → 8.394958, × 3 = 25.184874 →
    25.18. 1 × 119.00 incl. 19% less 11.90 incl. tax: net 100.00 − 10.00 = 90.00. 2 × 10.70 incl.
    7%: 2 × 10.00 = 20.00. Shipping 5.95 incl. 19% → 5.00. 19%: 25.18 + 90.00 + 5.00 = 120.18, tax
    22.8342 → 22.83; 7%: 20.00, tax 1.40. Basis 140.18 + tax 24.23 = 164.41, one cent below the
    164.42 entered (29.97 + 107.10 + 21.40 + 5.95): the first line's rounding."""
    totals = compute(DocumentInput(
        currency="EUR", prices_include_tax=True,
        lines=[line("3", "9.99"), line("1", "119.00", discount_amount=D("11.90")), line("2", "10.70", rate="7")],
        adjustments=[AdjustmentInput(charge=True, reason="Shipping", amount=D("5.95"), tax_category="S",
                                     tax_rate=D("19"))]))
    assert [str(t.net_price) for t in totals.lines] == ["8.394958", "100.00", "10.00"]
    assert [t.gross_amount for t in totals.lines] == [D("29.97"), D("119.00"), D("21.40")]
    assert [(t.allowance, t.net_amount) for t in totals.lines] == [(0, D("25.18")), (D("10"), D("90")), (0, D("20"))]
    assert totals.adjustments[0].amount == D("5.00")
    assert [(s.basis, s.tax) for s in totals.breakdown] == [(D("120.18"), D("22.83")), (D("20.00"), D("1.40"))]
    assert (totals.tax_basis_total, totals.tax_total, totals.grand_total) == (D("140.18"), D("24.23"), D("164.41"))


def test_an_amount_without_category_goes_to_the_only_category():
    totals = compute(DocumentInput(currency="EUR", lines=[line("1", "100"), line("2", "50")],
                                   adjustments=[AdjustmentInput(reason="Discount", amount=D("20"))]))
    assert [(a.tax_category, a.tax_rate, a.amount) for a in totals.adjustments] == [("S", D("19"), D("20.00"))]
    assert totals.grand_total == D("214.20")  # (200 − 20) × 1.19


def test_a_callers_decimal_context_does_not_change_the_result():
    doc = DocumentInput(currency="EUR", lines=[line("3.333", "1234.5678"), line("1", "0.125", rate="7")])
    expected = compute(doc)
    with decimal.localcontext(prec=4, rounding=decimal.ROUND_FLOOR):
        assert compute(doc) == expected


def test_minor_units_and_convert():
    assert (minor_units("EUR"), minor_units("JPY"), minor_units("KWD")) == (2, 0, 3)
    assert convert(D("19.00"), D("0.8573"), "GBP") == D("16.29")  # 16.2887
    assert str(convert(D("10.28"), D("161.23"), "JPY")) == "1657"  # 1657.4444
    assert str(convert(D("10.00"), D("0.30705"), "KWD")) == "3.071"  # 3.0705, half up
    for currency in ("EURO", "eur", ""):
        with pytest.raises(ValidationError) as refused:
            minor_units(currency)
        assert fields(refused.value) == ["currency"]
        assert "ISO 4217" in refused.value.errors[0].message
    with pytest.raises(ValidationError) as refused:
        convert(D("1"), D("0"), "EUR")
    assert fields(refused.value) == ["exchange_rate"]


# --- errors ------------------------------------------------------------------------------------


def fields(error: ValidationError) -> list[str]:
    return [e.field for e in error.errors]


def refusal(**document) -> ValidationError:
    document.setdefault("currency", "EUR")
    with pytest.raises(ValidationError) as refused:
        compute(DocumentInput(**document))
    return refused.value


def test_a_negative_quantity_is_refused():
    error = refusal(lines=[line("-1", "10")])
    assert fields(error) == ["lines[0].quantity"]
    assert "credit note" in error.errors[0].message


def test_an_unknown_tax_category_lists_the_accepted_ones():
    error = refusal(lines=[line("1", "10", category="X")])
    assert fields(error) == ["lines[0].tax_category"]
    assert all(code in error.errors[0].message for code in TAX_CATEGORIES)


def test_rates_must_fit_their_category():
    error = refusal(lines=[line("1", "10", rate="0"), line("1", "10", category="E", rate="20"),
                           line("1", "10", rate="100"), line("1", "10", category="Z", rate="0")])
    assert fields(error) == ["lines[0].tax_rate", "lines[1].tax_rate", "lines[2].tax_rate"]


def test_line_discounts_and_charges_are_checked():
    error = refusal(lines=[line("1", "10", discount_percent=D("100.01")),
                           line("1", "10", discount_percent=D("5"), discount_amount=D("1")),
                           line("2", "10", discount_amount=D("20.01")),
                           line("2", "10", discount_amount=D("20.00"), charge_amount=D("-1"))])
    assert fields(error) == ["lines[0].discount_percent", "lines[1].discount_amount",
                             "lines[2].discount_amount", "lines[3].charge_amount"]
    assert "not both" in error.errors[1].message
    assert "20.00" in error.errors[2].message


def test_an_amount_over_several_categories_needs_one():
    error = refusal(lines=[line("1", "10"), line("1", "10", rate="7")],
                    adjustments=[AdjustmentInput(reason="Discount", amount=D("1"))])
    assert fields(error) == ["adjustments[0].tax_category"]
    assert "S 19%" in error.errors[0].message and "S 7%" in error.errors[0].message


def test_an_adjustment_must_fit_a_line_category():
    error = refusal(lines=[line("1", "10")],
                    adjustments=[AdjustmentInput(reason="Discount", amount=D("1"), tax_category="S", tax_rate=D("7")),
                                 AdjustmentInput(reason="Discount", amount=D("1"), tax_category="Z"),
                                 AdjustmentInput(reason="Discount", amount=D("1"), tax_category="S"),
                                 AdjustmentInput(reason=" ", amount=D("1"), percent=D("5")),
                                 AdjustmentInput(reason="Discount", percent=D("101")),
                                 AdjustmentInput(reason="Discount", percent=D("1"), tax_category="X")])
    assert fields(error) == ["adjustments[0].tax_rate", "adjustments[1].tax_category", "adjustments[2].tax_rate",
                             "adjustments[3].reason", "adjustments[3].percent", "adjustments[4].percent",
                             "adjustments[5].tax_category"]
    assert error.errors[0].message == "no line has tax category S at 7%"
    assert error.errors[2].code == "required"


def test_allowances_beyond_their_category_are_refused():
    error = refusal(lines=[line("1", "10"), line("1", "10", rate="7")],
                    adjustments=[AdjustmentInput(reason="Discount", amount=D("5"), tax_category="S", tax_rate=D("7")),
                                 AdjustmentInput(charge=True, reason="Packing", amount=D("1"), tax_category="S",
                                                 tax_rate=D("7")),
                                 AdjustmentInput(reason="Discount", amount=D("6.01"), tax_category="S",
                                                 tax_rate=D("7"))])
    assert fields(error) == ["adjustments[2]"]  # 10 − 5 + 1 − 6.01 < 0
    assert "-0.01" in error.errors[0].message


def test_unknown_currency_and_empty_lines():
    error = refusal(currency="EURO", lines=[])
    assert fields(error) == ["currency", "lines"]
    assert "ISO 4217" in error.errors[0].message
    assert error.errors[1].message == "an invoice needs at least one line"


def test_all_errors_are_reported_together():
    error = refusal(currency="EURO",
                    lines=[line("-1", "-2", category="X"), LineInput(description="", quantity=D("1"),
                                                                     unit_price=D("1"), tax_rate=D("19"))],
                    adjustments=[AdjustmentInput(reason="Discount")], prepaid=D("NaN"))
    assert fields(error) == ["currency", "lines[0].quantity", "lines[0].unit_price", "lines[0].tax_category",
                             "lines[1].description", "adjustments[0].amount", "prepaid"]
