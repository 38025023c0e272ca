"""Per-type validation and conversion of field values: user input -> Python -> columns -> JSON.

Every entry point (API, CLI, import, automation) reaches these through the records service, so a
value is validated one way everywhere. Errors name what was wrong and what is accepted.
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import msgspec
import phonenumbers
from babel.numbers import get_currency_precision, list_currencies
from email_validator import EmailNotValidError, validate_email

from .entities import Field, FieldType

__all__ = ["FieldValueError", "Money", "Phone", "parse_value", "value_parser", "normalize_phone"]

UTC = dt.timezone.utc
MAX_TEXT = 10_000
MAX_LONG_TEXT = 1_000_000
MAX_INT = 2**63 - 1
TAG_RE = re.compile(r"^[^\s,][^,]{0,63}$")


class FieldValueError(ValueError):
    """A value a field does not accept; ``message`` says what is accepted."""

    def __init__(self, field: str, message: str, code: str = "invalid"):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.code = code


class Money(msgspec.Struct, frozen=True):
    amount: Decimal
    currency: str

    def __str__(self) -> str:  # as templates show it
        return f"{self.amount} {self.currency}"


class Phone(msgspec.Struct, frozen=True):
    #: E.164, e.g. ``+905321234567``: what lookups and filters compare.
    e164: str
    #: Exactly what the user typed.
    raw: str

    def __str__(self) -> str:
        return self.e164


@lru_cache(maxsize=1)
def _currencies() -> frozenset[str]:
    return frozenset(list_currencies())


def currency_precision(code: str) -> int:
    return get_currency_precision(code)


def normalize_phone(raw: str, region: str) -> str | None:
    """E.164 for a phone number as typed, read in ``region`` when it has no country code."""
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _decimal(field: Field, value: Any) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (int, str, Decimal, float)):
        raise FieldValueError(field.name, "expected a decimal number such as 1234.50")
    try:
        number = Decimal(str(value).strip()) if not isinstance(value, Decimal) else value
    except InvalidOperation:
        raise FieldValueError(field.name, f"{value!r} is not a number; expected e.g. 1234.50") from None
    if not number.is_finite():
        raise FieldValueError(field.name, "expected a finite number")
    if abs(number.adjusted()) > 30:
        raise FieldValueError(field.name, "the number is out of range (at most 30 digits)")
    return number


def parse_value(field: Field, value: Any, *, region: str = "US", currency: str = "EUR") -> Any:
    """Validate ``value`` for ``field`` and return its Python form (``None`` for empty)."""
    if value is None or value == "" and field.type is not FieldType.BOOLEAN:
        return None
    parse = _PARSERS[field.type]
    return parse(field, value, region, currency)


def value_parser(field: Field) -> Callable[[Field, Any, str, str], Any]:
    """The function parse_value calls for this field's type, ``(field, value, region, currency)``,
    for callers that parse many values: they skip the lookup, and must pass on ``None`` and
    ``""`` (empty: ``None``, except for booleans) themselves."""
    return _PARSERS[field.type]


def _text(field: Field, value: Any, region: str, currency: str) -> str:
    if not isinstance(value, str):
        raise FieldValueError(field.name, "expected a string")
    limit = field.max_length or (MAX_LONG_TEXT if field.type is FieldType.LONG_TEXT else MAX_TEXT)
    if len(value) > limit:
        raise FieldValueError(field.name, f"at most {limit} characters are accepted", "too_long")
    if field.type is FieldType.TEXT and ("\n" in value or "\r" in value):
        raise FieldValueError(field.name, "a single line of text is expected (use long_text)")
    if "\x00" in value:
        raise FieldValueError(field.name, "NUL characters are not accepted")
    return value


def _integer(field: Field, value: Any, region: str, currency: str) -> int:
    if isinstance(value, bool):
        raise FieldValueError(field.name, "expected a whole number")
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise FieldValueError(field.name, f"{value!r} is not a whole number") from None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int):
        raise FieldValueError(field.name, "expected a whole number")
    if not -MAX_INT <= value <= MAX_INT:
        raise FieldValueError(field.name, f"expected a whole number between {-MAX_INT} and {MAX_INT}")
    return value


def _decimal_field(field: Field, value: Any, region: str, currency: str) -> Decimal:
    return _decimal(field, value)


def _money(field: Field, value: Any, region: str, currency: str) -> Money:
    if isinstance(value, dict):
        unknown = set(value) - {"amount", "currency"}
        if unknown:
            raise FieldValueError(field.name, "a money value has only 'amount' and 'currency'")
        amount, code = value.get("amount"), value.get("currency") or currency
    elif isinstance(value, Money):
        amount, code = value.amount, value.currency
    else:
        amount, code = value, currency
    if amount is None or amount == "":
        raise FieldValueError(field.name, "a money value needs an amount, e.g. {'amount': '12.50', 'currency': 'EUR'}")
    number = _decimal(field, amount)
    if not isinstance(code, str) or code.upper() not in _currencies():
        raise FieldValueError(field.name, f"{code!r} is not an ISO 4217 currency code such as EUR, USD, JPY")
    code = code.upper()
    places = currency_precision(code)
    if -number.as_tuple().exponent > places:
        raise FieldValueError(
            field.name, f"{code} amounts have at most {places} decimal places; got {number}"
        )
    return Money(number, code)


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off", ""}


def _boolean(field: Field, value: Any, region: str, currency: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise FieldValueError(field.name, "expected true or false")


def _date(field: Field, value: Any, region: str, currency: str) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise FieldValueError(field.name, f"{value!r} is not a date; expected YYYY-MM-DD")


def _datetime(field: Field, value: Any, region: str, currency: str) -> dt.datetime:
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise FieldValueError(
                field.name, f"{value!r} is not a date-time; expected ISO 8601 with an offset, "
                "e.g. 2026-05-01T15:00:00+02:00"
            ) from None
    if not isinstance(value, dt.datetime):
        raise FieldValueError(field.name, "expected an ISO 8601 date-time")
    if value.tzinfo is None:
        raise FieldValueError(
            field.name, "a date-time needs a UTC offset or Z, e.g. 2026-05-01T15:00:00+02:00"
        )
    return value.astimezone(UTC)


def _choice(field: Field, value: Any, region: str, currency: str) -> str:
    if not isinstance(value, str) or value not in field.choices:
        raise FieldValueError(
            field.name, f"{value!r} is not one of the choices: {', '.join(field.choices)}"
        )
    return value


def _string_list(field: Field, value: Any) -> list[str]:
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise FieldValueError(field.name, "expected a list of strings")
    return list(dict.fromkeys(value))  # de-duplicated, order kept


def _multi_choice(field: Field, value: Any, region: str, currency: str) -> list[str]:
    items = _string_list(field, value)
    wrong = [v for v in items if v not in field.choices]
    if wrong:
        raise FieldValueError(
            field.name, f"{', '.join(map(repr, wrong))} not among the choices: {', '.join(field.choices)}"
        )
    return items


def _tags(field: Field, value: Any, region: str, currency: str) -> list[str]:
    items = [t.strip() for t in _string_list(field, value)]
    wrong = [t for t in items if not TAG_RE.match(t)]
    if wrong:
        raise FieldValueError(field.name, f"invalid tag {wrong[0]!r}: tags are 1-64 characters without commas")
    return list(dict.fromkeys(items))


_DOT_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*\Z")


@lru_cache(maxsize=8192)
def _email_domain(domain: str) -> str:
    """A domain checked and normalised by email-validator once, then remembered: bulk imports
    repeat the same few domains, and the full check costs ~60 us an address."""
    return validate_email(f"a@{domain}", check_deliverability=False).domain


def _email(field: Field, value: Any, region: str, currency: str) -> str:
    if not isinstance(value, str):
        raise FieldValueError(field.name, "expected an e-mail address")
    local, at, domain = value.strip().rpartition("@")
    if at and len(local) <= 64 and len(value) <= 254 and _DOT_ATOM.match(local):
        try:
            return f"{local}@{_email_domain(domain)}"
        except EmailNotValidError:
            pass  # the full check below gives the precise message
    try:
        return validate_email(value.strip(), check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise FieldValueError(field.name, f"{value!r} is not a valid e-mail address: {exc}") from None


def _phone(field: Field, value: Any, region: str, currency: str) -> Phone:
    if isinstance(value, Phone):
        return value
    if isinstance(value, dict):
        value = value.get("raw") or value.get("e164")
    if not isinstance(value, str) or len(value) > 64:
        raise FieldValueError(field.name, "expected a phone number as a string")
    e164 = normalize_phone(value, region)
    if e164 is None:
        raise FieldValueError(
            field.name, f"{value!r} is not a phone number; give it with a country code "
            f"(+44 20 7946 0958) or as dialled in {region}"
        )
    return Phone(e164, value.strip())


def _url(field: Field, value: Any, region: str, currency: str) -> str:
    if not isinstance(value, str) or len(value) > 2048:
        raise FieldValueError(field.name, "expected a URL")
    value = value.strip()
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or " " in value:
        raise FieldValueError(field.name, f"{value!r} is not an http(s) URL such as https://example.com")
    return value


def _relation(field: Field, value: Any, region: str, currency: str) -> int:
    if isinstance(value, dict):
        value = value.get("id")
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_INT:
        raise FieldValueError(field.name, f"expected the id of a {field.target} record")
    return value


_PARSERS = {
    FieldType.TEXT: _text,
    FieldType.LONG_TEXT: _text,
    FieldType.INTEGER: _integer,
    FieldType.DECIMAL: _decimal_field,
    FieldType.MONEY: _money,
    FieldType.BOOLEAN: _boolean,
    FieldType.DATE: _date,
    FieldType.DATETIME: _datetime,
    FieldType.CHOICE: _choice,
    FieldType.MULTI_CHOICE: _multi_choice,
    FieldType.EMAIL: _email,
    FieldType.PHONE: _phone,
    FieldType.URL: _url,
    FieldType.RELATION: _relation,
    FieldType.TAGS: _tags,
}


def search_text(field: Field, value: Any) -> str:
    """The words of a value that go into the full-text index."""
    if value is None:
        return ""
    if isinstance(value, Phone):
        return f"{value.e164} {value.e164[1:]} {value.raw}"
    if isinstance(value, list):
        return " ".join(value)
    if field.type is FieldType.EMAIL:
        return f"{value} {value.replace('@', ' ').replace('.', ' ')}"
    return str(value)
