"""vCard export and import of contacts, checked against a second implementation: the ``vcard``
package from PyPI (a strict RFC 2426 validator and parser, independent of vobject, which we use)."""

from __future__ import annotations

import io
import warnings

from vcard.vcard_validator import VCard

from crmcore import ListQuery
from crmcore.auth import SYSTEM

from .conftest import crm

PEOPLE = [
    {"first_name": "Ayşe", "last_name": "Yılmaz", "email": "ayse@example.com", "phone": "0532 123 45 67",
     "mobile": "+44 7700 900123", "job_title": "CEO, founder; owner", "tags": ["vip", "b2b"],
     "notes": "line one\nline two, with; punctuation \\ and a long tail " + "word " * 30},
    {"last_name": "Bare"},
    {"first_name": "Ömer", "last_name": "Çelik", "email": "omer@example.com"},
]


def _unescape(text: str) -> str:
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text):
            out.append("\n" if text[i + 1] in "nN" else text[i + 1])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _cards(data: bytes) -> list[dict[str, list]]:
    """Each card of ``data`` parsed by the ``vcard`` package: {NAME: [(parameters, values)]}.

    RFC 2426 defines its grammar over octets (non-ASCII is %x80-FF), so the UTF-8 text is given
    to it octet by octet (decoded as Latin-1) and the values turned back into UTF-8 text."""
    text = data.decode("latin-1")
    assert "\r\n" in text and "\n" not in text.replace("\r\n", "")  # CRLF line ends only
    for line in text.split("\r\n"):
        assert len(line.encode("latin-1")) <= 75, line  # folded at 75 octets
    cards = []
    for chunk in text.split("END:VCARD\r\n")[:-1]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            card = VCard(chunk + "END:VCARD\r\n")
        props: dict[str, list] = {}
        for prop in card.properties:
            values = [[_unescape(v.encode("latin-1").decode("utf-8")) for v in sub] for sub in prop.values]
            props.setdefault(prop.name.upper(), []).append((prop.parameters, values))
        cards.append(props)
    return cards


async def test_vcard_export_is_valid_for_a_second_implementation(make_deployment):
    dep = await make_deployment(region="TR")
    await dep.records.bulk_create("contact", PEOPLE)
    buf = io.BytesIO()
    assert await dep.exports.export("contact", buf, fmt="vcf", actor=SYSTEM) == 3
    cards = _cards(buf.getvalue())
    assert len(cards) == 3
    first = cards[0]
    assert first["N"][0][1][:2] == [["Yılmaz"], ["Ayşe"]]
    assert first["EMAIL"][0][1] == [["ayse@example.com"]]
    tels = {frozenset(v for vs in params.get("TYPE", set()) for v in [vs]): values[0][0] for params, values in first["TEL"]}
    assert sorted(tels.values()) == ["+447700900123", "+905321234567"]
    assert first["NOTE"][0][1] == [[PEOPLE[0]["notes"]]]
    # TITLE is text: its comma and semicolon are escaped, so it is one value
    assert first["TITLE"][0][1] == [["CEO, founder; owner"]]
    assert first["CATEGORIES"][0][1] == [["vip", "b2b"]]
    assert cards[1]["N"][0][1][0] == ["Bare"] and "EMAIL" not in cards[1]


async def test_vcard_round_trip(make_deployment, tmp_path):
    source = await make_deployment(region="TR")
    await source.records.bulk_create("contact", PEOPLE)
    path = tmp_path / "contacts.vcf"
    with open(path, "wb") as f:
        await source.exports.export("contact", f, fmt="vcf", actor=SYSTEM)
    target = await make_deployment(region="TR")
    result = await target.imports.import_file(path, "contact", actor=SYSTEM)
    assert (result.created, result.rejected) == (3, 0), result.errors
    keys = ("first_name", "last_name", "email", "job_title", "notes", "tags")

    def comparable(r: dict) -> tuple:
        return tuple(r.get(k) for k in keys) + tuple(r[p].e164 if r.get(p) else None for p in ("phone", "mobile"))

    before = [comparable(r) for r in (await source.records.list("contact", ListQuery(sort=["id"]))).items]
    after = [comparable(r) for r in (await target.records.list("contact", ListQuery(sort=["id"]))).items]
    assert after == before
    # imported again: every card is a duplicate (e-mail or phone), or created when it has neither
    again = await target.imports.import_file(path, "contact", actor=SYSTEM)
    assert (again.created, again.skipped) == (1, 2)


async def test_vcard_4_from_elsewhere(make_deployment, tmp_path):
    dep = await make_deployment(region="TR")
    path = tmp_path / "phone.vcf"
    path.write_bytes((
        "BEGIN:VCARD\r\nVERSION:4.0\r\nFN:Zeynep Arslan\r\nN:Arslan;Zeynep;;;\r\n"
        "TEL;TYPE=cell:+90 555 111 22 33\r\nTEL;TYPE=work,voice:0212 555 44 33\r\n"
        "EMAIL:zeynep@example.com\r\nNOTE:folded\r\n  note\r\nEND:VCARD\r\n"
        "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Only Fn\r\nEND:VCARD\r\n"
    ).encode())
    result = await dep.imports.import_file(path, "contact", actor=SYSTEM)
    assert result.created == 2, result.errors
    first, second = (await dep.records.list("contact", ListQuery(sort=["id"]))).items
    assert (first["first_name"], first["last_name"], first["email"]) == ("Zeynep", "Arslan", "zeynep@example.com")
    assert first["mobile"].e164 == "+905551112233" and first["phone"].e164 == "+902125554433"
    assert first["notes"] == "folded note"
    assert (second["first_name"], second["last_name"]) == ("Only", "Fn")


def test_cli_vcard(tmp_path):
    folder = tmp_path / "d"
    crm("init", str(folder), "--region", "TR")
    path = tmp_path / "in.vcf"
    path.write_text("BEGIN:VCARD\r\nVERSION:3.0\r\nN:Kaya;Deniz;;;\r\nFN:Deniz Kaya\r\n"
                    "EMAIL:deniz@example.com\r\nEND:VCARD\r\n", encoding="utf-8")
    assert "1 created" in crm("vcard", "import", str(path), deployment=folder).output
    out = tmp_path / "out.vcf"
    crm("vcard", "export", "--output", str(out), deployment=folder)
    [card] = _cards(out.read_bytes())
    assert card["EMAIL"][0][1] == [["deniz@example.com"]]
