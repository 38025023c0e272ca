"""The seller's settings, per deployment: who issues the invoices (legal name, VAT id, address,
bank account), payment terms and numbering series.

Stored in the database (``invoicing_settings``, one JSON document) so an admin edits them from
the API and the web UI; ``[plugin.invoicing]`` in crm.toml gives the defaults a new deployment
starts with. VAT ids and IBANs are checked with python-stdnum (check digits included), country
codes against CLDR's list.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec
from babel import Locale

from crmcore import FieldError, Forbidden, ValidationError

from .model import TAX_CATEGORIES, Party, PaymentInstructions

if TYPE_CHECKING:
    from crmcore import Actor, Deployment

SETTINGS_TABLE = 'CREATE TABLE IF NOT EXISTS invoicing_settings ("key" TEXT PRIMARY KEY, "value" TEXT NOT NULL)'
_COUNTRIES = frozenset(code for code in Locale("en").territories if len(code) == 2 and code.isalpha())


class SellerSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    legal_name: str = ""
    trade_name: str | None = None
    vat_id: str | None = None
    legal_id: str | None = None  # trade register number, SIRET...
    street: str | None = None
    street2: str | None = None
    city: str | None = None
    postcode: str | None = None
    country: str = ""
    email: str | None = None
    phone: str | None = None
    iban: str | None = None
    bic: str | None = None
    payment_terms_days: int = 30
    payment_terms: str | None = None  # printed; default "Payable within N days"
    invoice_series: str = "INV"
    credit_note_series: str = "CN"
    quote_series: str = "Q"
    number_digits: int = 5
    quote_validity_days: int = 30
    default_tax_category: str = "S"
    default_tax_rate: str = "0"
    #: The currency the books are kept in (rates of other currencies are recorded against it);
    #: empty: the deployment's currency.
    accounting_currency: str | None = None

    def party(self) -> Party:
        return Party(name=self.legal_name, vat_id=self.vat_id, legal_id=self.legal_id, street=self.street,
                     street2=self.street2, city=self.city, postcode=self.postcode, country=self.country,
                     email=self.email, phone=self.phone)

    def payment(self, remittance: str | None = None) -> PaymentInstructions:
        return PaymentInstructions(means_code="58" if self.iban else "30", iban=self.iban, bic=self.bic,
                                   account_name=self.legal_name or None, terms=self.terms_text(), remittance=remittance)

    def terms_text(self) -> str:
        return self.payment_terms or f"Payable within {self.payment_terms_days} days"

    def missing_for_issue(self) -> list[FieldError]:
        """What an invoice cannot be issued without (EN 16931 needs the seller's name, country and
        a VAT or legal id)."""
        errors = []
        if not self.legal_name:
            errors.append(FieldError("seller.legal_name", "required", "set the seller's legal name in the invoicing settings"))
        if not self.country:
            errors.append(FieldError("seller.country", "required", "set the seller's country in the invoicing settings"))
        if not self.vat_id and not self.legal_id:
            errors.append(FieldError("seller.vat_id", "required",
                                     "set the seller's VAT id (or legal registration id) in the invoicing settings"))
        return errors


def _clean(value: Any) -> Any:
    return value.strip() or None if isinstance(value, str) else value


def check(data: Any) -> SellerSettings:
    """Validate settings as given (a dict): every problem named by its field."""
    if not isinstance(data, dict):
        raise ValidationError([FieldError("settings", "invalid", "expected an object of settings")])
    fields = set(SellerSettings.__struct_fields__)
    errors = [FieldError(key, "unknown_field", f"not a setting; settings are: {', '.join(sorted(fields))}")
              for key in data if key not in fields]
    if errors:
        raise ValidationError(errors)
    try:
        settings = msgspec.convert({k: _clean(v) for k, v in data.items()}, SellerSettings)
    except msgspec.ValidationError as exc:
        path = str(exc).rpartition("at `$.")[2].rstrip("`") or "settings"
        raise ValidationError([FieldError(path, "invalid", str(exc).partition(" - at")[0])]) from None
    return _validated(settings)


def _validated(settings: SellerSettings) -> SellerSettings:
    from stdnum import iban
    from stdnum.exceptions import ValidationError as NumberError

    from .money import minor_units

    errors: list[FieldError] = []
    country = (settings.country or "").upper()
    if country and country not in _COUNTRIES:
        errors.append(FieldError("country", "invalid", "an ISO 3166 two-letter country code such as DE, FR, TR"))
    vat_id = settings.vat_id
    if vat_id:
        try:
            vat_id = _vat_id(vat_id, country)
        except NumberError:
            errors.append(FieldError("vat_id", "invalid",
                                     f"{settings.vat_id!r} is not a valid VAT id{' for ' + country if country else ''} "
                                     "(with its country prefix, e.g. DE136695976; check digits are checked)"))
    if settings.iban:
        try:
            settings.iban = iban.validate(settings.iban)
        except NumberError:
            errors.append(FieldError("iban", "invalid", f"{settings.iban!r} is not a valid IBAN (check digits are checked)"))
    if not 0 <= settings.payment_terms_days <= 365:
        errors.append(FieldError("payment_terms_days", "invalid", "between 0 and 365 days"))
    if not 3 <= settings.number_digits <= 9:
        errors.append(FieldError("number_digits", "invalid", "between 3 and 9 digits"))
    if not 0 <= settings.quote_validity_days <= 3650:
        errors.append(FieldError("quote_validity_days", "invalid", "between 0 and 3650 days"))
    for name in ("invoice_series", "credit_note_series", "quote_series"):
        series = getattr(settings, name) or ""
        if not (1 <= len(series) <= 12 and series.replace("_", "").replace("/", "").isalnum()):
            errors.append(FieldError(name, "invalid", "1 to 12 letters or digits, e.g. INV"))
    if settings.default_tax_category not in TAX_CATEGORIES:
        errors.append(FieldError("default_tax_category", "invalid", "one of " + ", ".join(TAX_CATEGORIES)))
    try:
        from decimal import Decimal, InvalidOperation

        rate = Decimal(str(settings.default_tax_rate))
        if not 0 <= rate < 100:
            raise InvalidOperation
        settings.default_tax_rate = str(rate)
    except (InvalidOperation, ValueError):
        errors.append(FieldError("default_tax_rate", "invalid", "a percentage from 0 to below 100, e.g. 19"))
    if settings.accounting_currency:
        try:
            minor_units(settings.accounting_currency.upper())
            settings.accounting_currency = settings.accounting_currency.upper()
        except ValidationError:
            errors.append(FieldError("accounting_currency", "invalid", "a three-letter ISO 4217 code such as EUR"))
    if errors:
        raise ValidationError(errors)
    settings.country = country
    settings.vat_id = vat_id
    return settings


#: Countries whose VAT ids the EU VIES format covers (EL for Greece, XI for Northern Ireland).
_EU_VAT = frozenset({"AT", "BE", "BG", "CY", "CZ", "DE", "DK", "EE", "ES", "FI", "FR", "GR", "HR", "HU", "IE", "IT",
                     "LT", "LU", "LV", "MT", "NL", "PL", "PT", "RO", "SE", "SI", "SK", "XI"})


def _vat_id(value: str, country: str) -> str:
    """A VAT id checked and in its canonical form, with its country prefix: EU ids by VIES
    rules, others by their country's rules where python-stdnum knows them."""
    from stdnum import get_cc_module
    from stdnum.eu import vat as eu_vat
    from stdnum.exceptions import ValidationError as NumberError

    compact = "".join(ch for ch in value if ch.isalnum()).upper()
    prefix = "EL" if country == "GR" else country
    if compact[:2] in _EU_VAT or compact[:2] == "EL" or country in _EU_VAT:
        if not compact[:2].isalpha():
            compact = prefix + compact
        return eu_vat.validate(compact)
    local = get_cc_module(country.lower(), "vat") if country else None
    if compact[:2] == prefix:
        compact = compact[2:]
    if local is not None:
        return prefix + local.compact(local.validate(compact))
    if country and 4 <= len(compact) <= 20:  # no rules known for the country: its format is taken as given
        return prefix + compact
    raise NumberError()


class SettingsStore:
    """Reads and writes ``invoicing_settings``; crm.toml's ``[plugin.invoicing]`` are the defaults."""

    def __init__(self, deployment: Deployment):
        self.deployment = deployment

    def defaults(self) -> dict[str, Any]:
        known = set(SellerSettings.__struct_fields__)
        return {k: v for k, v in self.deployment.plugin_settings("invoicing").items() if k in known}

    async def load(self) -> SellerSettings:
        row = await self.deployment.db.fetchrow('SELECT "value" FROM invoicing_settings WHERE "key" = ?', ("seller",))
        stored = msgspec.json.decode(row[0]) if row else {}
        settings = msgspec.convert({**self.defaults(), **stored}, SellerSettings)
        if not settings.accounting_currency:
            settings.accounting_currency = self.deployment.settings.currency
        return settings

    async def save(self, changes: Any, *, actor: Actor) -> SellerSettings:
        """Change some settings (a partial update), checked as a whole."""
        if not actor.has("invoicing.settings"):
            raise Forbidden("changing the invoicing settings needs the invoicing.settings permission")
        if not isinstance(changes, dict):
            raise ValidationError([FieldError("settings", "invalid", "expected an object of settings")])
        current = msgspec.to_builtins(await self.load())
        settings = check({**current, **changes})
        value = msgspec.json.encode(settings).decode()
        async with self.deployment.db.transaction():
            await self.deployment.db.execute(
                'INSERT INTO invoicing_settings ("key", "value") VALUES (?, ?) '
                'ON CONFLICT ("key") DO UPDATE SET "value" = excluded."value"', ("seller", value))
        return settings
