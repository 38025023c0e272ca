"""vCard (.vcf) for contacts, through vobject: one contact to a vCard 3.0 (RFC 2426; lines folded
at 75 octets, CRLF, text escaped as the RFC says) and vCard files (3.0 or 4.0) to contact values.

The import turns each card into a row whose columns are contact field names
(:data:`VCARD_COLUMNS`), so cards go through the same validation, dedup and batches as a CSV.
"""

from __future__ import annotations

from typing import Any

import vobject

from .fieldvalues import Phone
from .records.errors import FieldError, ValidationError

__all__ = ["VCARD_COLUMNS", "contact_to_vcard", "read_vcards"]

#: The columns a card becomes (contact fields).
VCARD_COLUMNS = ("first_name", "last_name", "email", "phone", "mobile", "job_title", "notes", "tags")


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, Phone):
        return value.e164
    return str(value)


def contact_to_vcard(record: dict[str, Any]) -> str:
    """A contact record as one vCard 3.0 (CRLF line ends, folded)."""
    card = vobject.vCard()
    first, last = _text(record.get("first_name")), _text(record.get("last_name"))
    card.add("n").value = vobject.vcard.Name(family=last, given=first)
    card.add("fn").value = " ".join(p for p in (first, last) if p) or "(no name)"
    if record.get("email"):
        email = card.add("email")
        email.value = _text(record["email"])
        email.type_param = "INTERNET"
    for name, kind in (("phone", "WORK"), ("mobile", "CELL")):
        if record.get(name):
            tel = card.add("tel")
            tel.value = _text(record[name])
            tel.type_param = kind
    if record.get("job_title"):
        card.add("title").value = _text(record["job_title"])
    if record.get("notes"):
        card.add("note").value = _text(record["notes"])
    if record.get("tags"):
        card.add("categories").value = list(record["tags"])
    if record.get("id") is not None:
        card.add("uid").value = f"crm-contact-{record['id']}"
    return card.serialize()


def _types(line: Any) -> set[str]:
    found = set()
    for value in line.params.get("TYPE", []):
        found.update(v.strip().upper() for v in str(value).split(","))
    return found


def read_vcards(text: str) -> list[dict[str, str]]:
    """Every card of a .vcf file as ``{contact field: text}``; a malformed file is a
    ValidationError naming the line."""
    cards = []
    try:
        for number, card in enumerate(vobject.readComponents(text, ignoreUnreadable=False), 1):
            if card.name.upper() != "VCARD":
                continue
            values: dict[str, str] = {}
            n = getattr(card, "n", None)
            if n is not None and isinstance(n.value, vobject.vcard.Name):
                values["first_name"] = " ".join(filter(None, _flat(n.value.given)))
                values["last_name"] = " ".join(filter(None, _flat(n.value.family)))
            if not values.get("last_name") and hasattr(card, "fn"):
                parts = str(card.fn.value).strip().rsplit(" ", 1)
                values["last_name"] = parts[-1]
                if len(parts) > 1 and not values.get("first_name"):
                    values["first_name"] = parts[0]
            emails = card.contents.get("email", [])
            if emails:
                values["email"] = str(emails[0].value).strip()
            for tel in card.contents.get("tel", []):
                slot = "mobile" if "CELL" in _types(tel) else "phone"
                if slot in values:
                    slot = "mobile" if slot == "phone" else "phone"
                if slot not in values:
                    values[slot] = str(tel.value).strip().removeprefix("tel:")
            if "title" in card.contents:
                values["job_title"] = str(card.title.value)
            if "note" in card.contents:
                values["notes"] = str(card.note.value)
            tags: list[str] = []
            for line in card.contents.get("categories", []):
                tags += [str(t).strip() for t in (line.value if isinstance(line.value, list) else [line.value])]
            if tags:
                values["tags"] = ", ".join(t for t in tags if t)
            cards.append(values)
    except vobject.base.ParseError as exc:
        raise ValidationError([FieldError("file", "invalid", f"not a valid vCard file: {exc}")]) from None
    return cards


def _flat(value: Any) -> list[str]:
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return [str(value)] if value else []
