"""Field values: validation and conversion per field type (pure functions, no database)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from crmcore import Field, FieldType, Money, Phone, normalize_phone
from crmcore.fieldvalues import FieldValueError, parse_value

T = FieldType
UTC = dt.timezone.utc


def f(type_: FieldType, **kw) -> Field:
    if type_ in (T.CHOICE, T.MULTI_CHOICE):
        kw.setdefault("choices", ["red", "green"])
    if type_ is T.RELATION:
        kw.setdefault("target", "company")
    return Field(name="thing", type=type_, **kw)


def refused(field: Field, value, **kw) -> FieldValueError:
    with pytest.raises(FieldValueError) as exc:
        parse_value(field, value, **kw)
    assert exc.value.field == "thing" and exc.value.message
    return exc.value


@pytest.mark.parametrize("type_", list(FieldType))
def test_empty_is_none_for_every_type(type_):
    assert parse_value(f(type_), None) is None
    if type_ is not T.BOOLEAN:
        assert parse_value(f(type_), "") is None


@pytest.mark.parametrize("type_, value, expected", [
    (T.TEXT, "hello", "hello"),
    (T.LONG_TEXT, "a\nb", "a\nb"),
    (T.INTEGER, "42", 42), (T.INTEGER, 7.0, 7), (T.INTEGER, -5, -5),
    (T.DECIMAL, "1234.50", Decimal("1234.50")), (T.DECIMAL, 3, Decimal(3)), (T.DECIMAL, " 0.1 ", Decimal("0.1")),
    (T.BOOLEAN, "yes", True), (T.BOOLEAN, "off", False), (T.BOOLEAN, 1, True), (T.BOOLEAN, "", False),
    (T.DATE, "2026-05-01", dt.date(2026, 5, 1)), (T.DATE, dt.datetime(2026, 5, 1, 9), dt.date(2026, 5, 1)),
    (T.DATETIME, "2026-05-01T15:00:00+02:00", dt.datetime(2026, 5, 1, 13, tzinfo=UTC)),
    (T.DATETIME, "2026-05-01T15:00:00Z", dt.datetime(2026, 5, 1, 15, tzinfo=UTC)),
    (T.CHOICE, "red", "red"),
    (T.MULTI_CHOICE, "red, green, red", ["red", "green"]),
    (T.EMAIL, "Ayse@Example.COM", "Ayse@example.com"),
    (T.URL, " https://example.com/a?b=1 ", "https://example.com/a?b=1"),
    (T.RELATION, "12", 12), (T.RELATION, {"id": 3}, 3),
    (T.TAGS, ["vip", " b2b ", "vip"], ["vip", "b2b"]), (T.TAGS, "a, b", ["a", "b"]),
])
def test_accepted(type_, value, expected):
    assert parse_value(f(type_), value) == expected


@pytest.mark.parametrize("type_, value, words", [
    (T.TEXT, 5, "string"), (T.TEXT, "a\nb", "single line"), (T.TEXT, "a\x00", "NUL"),
    (T.INTEGER, "4.5", "whole number"), (T.INTEGER, True, "whole number"), (T.INTEGER, 2**64, "between"),
    (T.DECIMAL, "abc", "not a number"), (T.DECIMAL, "NaN", "finite"), (T.DECIMAL, "1e40", "range"),
    (T.DECIMAL, True, "decimal"),
    (T.BOOLEAN, "maybe", "true or false"), (T.BOOLEAN, 2, "true or false"),
    (T.DATE, "01/05/2026", "YYYY-MM-DD"), (T.DATE, 20260501, "YYYY-MM-DD"),
    (T.DATETIME, "2026-05-01T15:00:00", "offset"), (T.DATETIME, "tomorrow", "ISO 8601"),
    (T.DATETIME, dt.datetime(2026, 5, 1), "offset"),
    (T.CHOICE, "blue", "red, green"), (T.MULTI_CHOICE, ["red", "blue"], "red, green"),
    (T.MULTI_CHOICE, [1], "list of strings"),
    (T.EMAIL, "no-at-sign", "e-mail"), (T.EMAIL, "a@b", "e-mail"), (T.EMAIL, ["a@b.com"], "e-mail"),
    (T.PHONE, "12", "phone number"), (T.PHONE, 5321234567, "string"), (T.PHONE, "x" * 65, "string"),
    (T.URL, "example.com", "http"), (T.URL, "javascript:alert(1)", "http"), (T.URL, "http://a b.com", "http"),
    (T.RELATION, 0, "id"), (T.RELATION, -1, "id"), (T.RELATION, "abc", "id"), (T.RELATION, True, "id"),
    (T.TAGS, ["a,b"], "commas"), (T.TAGS, ["x" * 65], "1-64"), (T.TAGS, 5, "list"),
])
def test_refused_with_what_is_accepted(type_, value, words):
    error = refused(f(type_), value)
    assert words in error.message
    assert str(error).startswith("thing: ")


def test_text_max_length():
    assert parse_value(f(T.TEXT, max_length=3), "abc") == "abc"
    assert refused(f(T.TEXT, max_length=3), "abcd").code == "too_long"
    assert refused(f(T.TEXT), "x" * 10_001).code == "too_long"
    assert parse_value(f(T.LONG_TEXT), "x" * 10_001)


@pytest.mark.parametrize("typed", [
    "(0532) 123 45 67", "+90 532 1234567", "0532-123-4567", "0532 123 45 67", "+905321234567", "00905321234567",
])
def test_turkish_phone_normalisation(typed):
    assert normalize_phone(typed, "TR") == "+905321234567"
    assert parse_value(f(T.PHONE), typed, region="TR") == Phone("+905321234567", typed.strip())


def test_phone_region_and_country_code():
    assert normalize_phone("020 7946 0958", "GB") == "+442079460958"
    assert normalize_phone("+44 20 7946 0958", "TR") == "+442079460958"  # a country code wins
    assert normalize_phone("(202) 555-0123", "US") == "+12025550123"
    assert normalize_phone("not a phone", "TR") is None
    error = refused(f(T.PHONE), "12", region="TR")
    assert "TR" in error.message and "+44" in error.message
    assert parse_value(f(T.PHONE), {"raw": "0532 123 45 67"}, region="TR").e164 == "+905321234567"


@pytest.mark.parametrize("value, expected", [
    ({"amount": "1500", "currency": "JPY"}, Money(Decimal("1500"), "JPY")),
    ({"amount": "12.345", "currency": "KWD"}, Money(Decimal("12.345"), "KWD")),
    ({"amount": "12.34", "currency": "eur"}, Money(Decimal("12.34"), "EUR")),
    ({"amount": 10}, Money(Decimal(10), "TRY")),  # the deployment's currency
    ("99.90", Money(Decimal("99.90"), "TRY")),
    (Money(Decimal("1"), "USD"), Money(Decimal("1"), "USD")),
])
def test_money_accepted(value, expected):
    got = parse_value(f(T.MONEY), value, currency="TRY")
    assert got == expected and str(got.amount) == str(expected.amount)


@pytest.mark.parametrize("value, words", [
    ({"amount": "1500.5", "currency": "JPY"}, "JPY amounts have at most 0 decimal places"),
    ({"amount": "1.2345", "currency": "KWD"}, "KWD amounts have at most 3 decimal places"),
    ({"amount": "1.001", "currency": "EUR"}, "at most 2"),
    ({"amount": "1", "currency": "EURO"}, "ISO 4217"),
    ({"amount": "1", "currency": 5}, "ISO 4217"),
    ({"currency": "EUR"}, "needs an amount"),
    ({"amount": "1", "currency": "EUR", "rate": 2}, "only 'amount' and 'currency'"),
    ({"amount": "ten", "currency": "EUR"}, "not a number"),
])
def test_money_refused(value, words):
    assert words in refused(f(T.MONEY), value, currency="EUR").message


def test_decimal_is_exact():
    assert parse_value(f(T.DECIMAL), "0.1") + parse_value(f(T.DECIMAL), "0.2") == Decimal("0.3")
    assert str(parse_value(f(T.DECIMAL), "1.10")) == "1.10"
