"""Demo data for the standard edition: a small sales team and its book of business.

Everything is written through ``deployment.records`` (the one write path), so demo records are
validated, audited and indexed like any other. The data is deterministic for a given ``seed``
and day (dates are relative to today so that some tasks are overdue and some deals close soon).

Contacts come from several countries. Phone numbers of the deployment's own region are given as
dialled there (``(0532) 123 45 67`` in Turkey), the others in the international ``+CC`` form, so
every number normalises to E.164 whatever the region.
"""

from __future__ import annotations

import datetime as dt
import random
import re
import unicodedata
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from faker import Faker

from .deployment import DeploymentError
from .fieldvalues import currency_precision
from .records.query import ListQuery

__all__ = ["load_demo", "DemoError", "DEMO_ADMIN_EMAIL", "DEMO_ADMIN_PASSWORD", "DEMO_PASSWORD", "DEMO_TEAMS"]

#: The demo's administrator and its password (printed when the demo server starts).
DEMO_ADMIN_EMAIL = "admin@example.com"
DEMO_ADMIN_PASSWORD = "demo-admin-password"
#: The password of every other demo user (so each role can be tried out).
DEMO_PASSWORD = "demo-password"
DEMO_TEAMS = ["Türkiye", "Europe"]

UTC = dt.timezone.utc


class DemoError(DeploymentError):
    """Demo data cannot be loaded into this deployment (e.g. it already holds contacts)."""


# -- countries ---------------------------------------------------------------------------------

def _digits(rng: random.Random, n: int) -> str:
    return "".join(str(rng.randint(0, 9)) for _ in range(n))


class _Country:
    def __init__(
        self, code: str, locale: str, calling: str, weight: int, tld: str,
        cities: list[tuple[str, str, Callable[[random.Random], str]]],
        mobile: Callable[[random.Random], tuple[str, str]],
        landline: Callable[[random.Random, str], tuple[str, str]],
        company_forms: list[str],
    ):
        self.code, self.locale, self.calling, self.weight, self.tld = code, locale, calling, weight, tld
        #: (city, area code, postal code maker)
        self.cities = cities
        #: rng -> (national form, international form)
        self.mobile = mobile
        #: rng, area code -> (national form, international form)
        self.landline = landline
        self.company_forms = company_forms


def _tr_mobile(r: random.Random) -> tuple[str, str]:
    op, a, b, c = f"5{r.choice('034')}{r.randint(0, 9)}", _digits(r, 3), _digits(r, 2), _digits(r, 2)
    return f"(0{op}) {a} {b} {c}", f"+90 {op} {a} {b} {c}"


def _tr_land(r: random.Random, area: str) -> tuple[str, str]:
    a, b, c = f"{r.randint(2, 6)}{_digits(r, 2)}", _digits(r, 2), _digits(r, 2)
    return f"(0{area}) {a} {b} {c}", f"+90 {area} {a} {b} {c}"


def _de_mobile(r: random.Random) -> tuple[str, str]:
    op, rest = r.choice(["151", "160", "170", "176"]), f"{r.randint(1, 9)}{_digits(r, 7)}"
    return f"0{op} {rest}", f"+49 {op} {rest}"


def _de_land(r: random.Random, area: str) -> tuple[str, str]:
    rest = f"{r.randint(2, 9)}{_digits(r, 6)}"
    return f"0{area} {rest}", f"+49 {area} {rest}"


def _gb_mobile(r: random.Random) -> tuple[str, str]:
    a, b = f"7{r.choice(['400', '700', '800', '900'])}", _digits(r, 6)
    return f"0{a} {b}", f"+44 {a} {b}"


def _gb_land(r: random.Random, area: str) -> tuple[str, str]:
    if len(area) == 2:  # London, 020 XXXX XXXX
        a, b = f"7{_digits(r, 3)}", _digits(r, 4)
        return f"0{area} {a} {b}", f"+44 {area} {a} {b}"
    a = f"{r.randint(2, 9)}{_digits(r, 6)}"
    return f"0{area} {a[:3]} {a[3:]}", f"+44 {area} {a[:3]} {a[3:]}"


def _us_mobile(r: random.Random) -> tuple[str, str]:
    area = r.choice(["917", "646", "312", "512"])
    return _us_land(r, area)


def _us_land(r: random.Random, area: str) -> tuple[str, str]:
    a, b = f"{r.randint(2, 9)}{_digits(r, 2)}", _digits(r, 4)
    return f"({area}) {a}-{b}", f"+1 {area} {a} {b}"


def _fr_mobile(r: random.Random) -> tuple[str, str]:
    groups = [_digits(r, 2) for _ in range(4)]
    lead = r.choice("67")
    return f"0{lead} {' '.join(groups)}", f"+33 {lead} {' '.join(groups)}"


def _fr_land(r: random.Random, area: str) -> tuple[str, str]:
    groups = [f"{r.randint(1, 9)}{r.randint(0, 9)}"] + [_digits(r, 2) for _ in range(3)]
    return f"0{area} {' '.join(groups)}", f"+33 {area} {' '.join(groups)}"


def _nl_mobile(r: random.Random) -> tuple[str, str]:
    rest = _digits(r, 8)
    return f"06 {rest[:2]} {rest[2:5]} {rest[5:]}", f"+31 6 {rest[:2]} {rest[2:5]} {rest[5:]}"


def _nl_land(r: random.Random, area: str) -> tuple[str, str]:
    rest = f"{r.randint(2, 9)}{_digits(r, 6)}"
    return f"0{area} {rest[:3]} {rest[3:]}", f"+31 {area} {rest[:3]} {rest[3:]}"


def _postal(fmt: str) -> Callable[[random.Random], str]:
    def make(r: random.Random) -> str:
        return "".join(str(r.randint(0, 9)) if ch == "#" else chr(r.randint(65, 90)) if ch == "?" else ch for ch in fmt)
    return make


COUNTRIES = [
    _Country("TR", "tr_TR", "90", 50, "com.tr", [
        ("İstanbul", "212", _postal("344##")), ("İstanbul", "216", _postal("347##")),
        ("Ankara", "312", _postal("06###")), ("İzmir", "232", _postal("35###")),
        ("Bursa", "224", _postal("16###")), ("Antalya", "242", _postal("07###")),
    ], _tr_mobile, _tr_land, ["A.Ş.", "Ltd. Şti.", "San. ve Tic. A.Ş."]),
    _Country("DE", "de_DE", "49", 16, "de", [
        ("Berlin", "30", _postal("10###")), ("München", "89", _postal("80###")),
        ("Hamburg", "40", _postal("20###")), ("Köln", "221", _postal("50###")),
    ], _de_mobile, _de_land, ["GmbH", "AG", "GmbH & Co. KG"]),
    _Country("GB", "en_GB", "44", 10, "co.uk", [
        ("London", "20", _postal("EC# #??")), ("Manchester", "161", _postal("M# #??")),
        ("Bristol", "117", _postal("BS# #??")),
    ], _gb_mobile, _gb_land, ["Ltd", "plc"]),
    _Country("US", "en_US", "1", 9, "com", [
        ("New York", "212", _postal("100##")), ("Chicago", "312", _postal("606##")),
        ("Austin", "512", _postal("787##")),
    ], _us_mobile, _us_land, ["Inc.", "LLC", "Corp."]),
    _Country("FR", "fr_FR", "33", 8, "fr", [
        ("Paris", "1", _postal("750##")), ("Lyon", "4", _postal("6900#")),
    ], _fr_mobile, _fr_land, ["SAS", "SA", "SARL"]),
    _Country("NL", "nl_NL", "31", 7, "nl", [
        ("Amsterdam", "20", _postal("10## ??")), ("Rotterdam", "10", _postal("30## ??")),
    ], _nl_mobile, _nl_land, ["B.V.", "N.V."]),
]

TR_STREETS = [
    "Atatürk Cad.", "İstiklal Cad.", "Cumhuriyet Blv.", "Bağdat Cad.", "Kıbrıs Şehitleri Cad.",
    "Gazi Mustafa Kemal Blv.", "Alsancak Mah. 1453 Sk.", "Barbaros Blv.", "Tunalı Hilmi Cad.",
]

INDUSTRIES = [
    ("Textiles", "Tekstil", "Textil", "Textiles"),
    ("Logistics", "Lojistik", "Logistik", "Logistics"),
    ("Software", "Yazılım", "Software", "Software"),
    ("Food & Beverage", "Gıda", "Lebensmittel", "Foods"),
    ("Construction", "İnşaat", "Bau", "Construction"),
    ("Healthcare", "Sağlık", "Medizintechnik", "Health"),
    ("Energy", "Enerji", "Energie", "Energy"),
    ("Retail", "Ticaret", "Handel", "Retail"),
    ("Tourism", "Turizm", "Reisen", "Travel"),
    ("Manufacturing", "Makina", "Maschinenbau", "Manufacturing"),
]
COMPANY_TAGS = ["key-account", "partner", "smb", "enterprise", "reseller", "public-sector"]
CONTACT_TAGS = ["vip", "newsletter", "decision-maker", "influencer", "technical", "champion", "lead"]
JOB_TITLES = [
    "CEO", "Managing Director", "Purchasing Manager", "Head of Sales", "Operations Manager",
    "IT Manager", "CFO", "Procurement Specialist", "Marketing Director", "Office Manager",
    "Project Manager", "Owner", "Finance Manager", "Logistics Coordinator",
]
SOURCES = ["web form", "referral", "trade fair", "cold call", "LinkedIn", "partner", "newsletter"]
PRODUCTS = [
    ("CRM licences", 4_000, 40_000), ("Annual support contract", 2_500, 18_000),
    ("Onboarding & training", 1_500, 9_000), ("Integration project", 8_000, 60_000),
    ("Data migration", 3_000, 15_000), ("Custom reporting", 2_000, 12_000),
    ("Hardware bundle", 5_000, 35_000), ("Consulting days", 1_200, 10_000),
]
LOST_REASONS = [
    "Price too high", "Chose a competitor", "No budget this year", "Project postponed",
    "No decision maker reached", "Missing feature",
]
SALES_TEAM = [
    ("Ayşe Yılmaz", "tr_TR", "TR", "tr", "Europe/Istanbul"),
    ("Mehmet Demir", "tr_TR", "TR", "tr", "Europe/Istanbul"),
    ("Zeynep Kaya", "tr_TR", "TR", "tr", "Europe/Istanbul"),
    ("Jonas Becker", "de_DE", "DE", "de", "Europe/Berlin"),
    ("Emily Clarke", "en_GB", "GB", "en", "Europe/London"),
]
#: Each sales person's team and role: a sales manager and agents in each team.
SALES_ROLES = {
    "Ayşe Yılmaz": ("Türkiye", "sales_manager"), "Mehmet Demir": ("Türkiye", "agent"),
    "Zeynep Kaya": ("Türkiye", "agent"), "Jonas Becker": ("Europe", "sales_manager"),
    "Emily Clarke": ("Europe", "agent"),
}
CALL_SUBJECTS = ["Intro call", "Follow-up call", "Discuss quote", "Check-in", "Renewal call", "Reference call"]
MEETING_SUBJECTS = ["Product demo", "Kick-off meeting", "Requirements workshop", "Quarterly review", "On-site visit"]
EMAIL_SUBJECTS = ["Sent proposal", "Sent brochure", "Answered pricing question", "Shared case study", "Sent contract draft"]
NOTE_SUBJECTS = ["Budget approved for Q3", "Prefers calls in the morning", "Evaluating two vendors", "Met at trade fair", "Wants Turkish invoices"]
TASK_SUBJECTS = ["Send revised quote", "Prepare demo environment", "Call back about contract", "Book meeting room",
                 "Follow up on invoice", "Update contact details", "Send thank-you note"]

_FOLD = str.maketrans({"ı": "i", "İ": "I", "ß": "ss", "ø": "o", "æ": "ae", "ł": "l", "đ": "d"})


def _ascii(text: str) -> str:
    text = unicodedata.normalize("NFKD", text.translate(_FOLD))
    return "".join(ch for ch in text if not unicodedata.combining(ch)).encode("ascii", "ignore").decode()


def _slug(text: str, sep: str = "-") -> str:
    return re.sub(r"[^a-z0-9]+", sep, _ascii(text).lower()).strip(sep)


def _money(amount: int, currency: str) -> dict[str, str]:
    places = currency_precision(currency)
    return {"amount": str(Decimal(amount).quantize(Decimal(1).scaleb(-places))), "currency": currency}


# -- the loader --------------------------------------------------------------------------------

async def _demo_users(deployment: Any, people: list[dict[str, Any]]) -> tuple[list[int], int]:
    """The demo's teams and users (those already there are kept as they are): the sales
    people's ids in order, and how many users were made."""
    from .auth.permissions import SYSTEM
    from .records.errors import NotFound

    auth = deployment.auth
    existing_teams = {t["name"] for t in await auth.teams()}
    for team in DEMO_TEAMS:
        if team not in existing_teams:
            await auth.create_team(team, actor=SYSTEM)
    created = 0
    try:
        await auth.user_by_email(DEMO_ADMIN_EMAIL)
    except NotFound:
        await auth.create_user(name="Demo Admin", email=DEMO_ADMIN_EMAIL, password=DEMO_ADMIN_PASSWORD,
                               role="admin", teams=list(DEMO_TEAMS), actor=SYSTEM)
        created += 1
    shared = await auth.hash_password(DEMO_PASSWORD)
    ids = []
    for person in people:
        try:
            ids.append((await auth.user_by_email(person["email"]))["id"])
            continue
        except NotFound:
            pass
        team, role = SALES_ROLES.get(person["name"], (DEMO_TEAMS[0], "agent"))
        fields = {k: v for k, v in person.items() if k not in ("name", "email")}
        user = await auth.create_user(name=person["name"], email=person["email"], role=role, teams=[team],
                                      fields=fields, actor=SYSTEM)
        await auth.set_password_hash(user["id"], shared, actor=SYSTEM)
        ids.append(user["id"])
        created += 1
    return ids, created


async def load_demo(
    deployment: Any, *, contacts: int = 240, seed: int = 1, today: dt.date | None = None,
) -> dict[str, int]:
    """Load demo users, companies, contacts, deals and activities; return how many of each.

    Refuses (:class:`DemoError`) when the deployment already holds contacts.
    """
    records = deployment.records
    for entity in ("user", "company", "contact", "deal", "activity"):
        if deployment.registry.get(entity) is None:
            raise DemoError(f"the demo needs the core entity {entity!r}, which this deployment does not have")
    if contacts < 1:
        raise DemoError("the demo needs at least one contact")
    existing = await records.list("contact", ListQuery(limit=1, count=True))
    if existing.total:
        raise DemoError(
            f"deployment {deployment.settings.name!r} already holds {existing.total} contacts; demo data is only loaded "
            "into a deployment without contacts (make a new one with: crm init DIR)"
        )

    rng = random.Random(seed)
    fake = Faker([c.locale for c in COUNTRIES])
    fake.seed_instance(seed)
    today = today or dt.datetime.now(UTC).date()
    now = dt.datetime.combine(today, dt.time(9, 0), UTC)
    region = deployment.settings.region
    home = deployment.settings.currency
    weights = [c.weight for c in COUNTRIES]

    def phone(country: _Country, mobile: bool, area: str | None = None) -> str:
        national, international = country.mobile(rng) if mobile or area is None else country.landline(rng, area)
        return national if country.code == region else international

    def street(country: _Country) -> str:
        if country.code == "TR":
            return f"{rng.choice(TR_STREETS)} No: {rng.randint(1, 180)}"
        name = fake[country.locale].street_name()
        number = rng.randint(1, 220)
        if country.code in ("FR", "US", "GB"):
            return f"{number} {name}" if country.code != "FR" else f"{number}, {name}"
        return f"{name} {number}"

    # Users: the sales team in two teams (a sales manager and agents each), and an admin.
    # Passwords are hashed twice in all (argon2 is slow on purpose): the admin's, and one
    # shared by the sales team.
    user_ids, created = await _demo_users(deployment, [
        {"name": name, "email": f"{_slug(name, '.')}@demo-crm.example.com",
         "phone": phone(next(c for c in COUNTRIES if c.code == code), True), "locale": lang, "time_zone": tz}
        for name, _locale, code, lang, tz in SALES_TEAM
    ])

    # Companies: about one for every four contacts.
    company_count = max(1, round(contacts / 4))
    companies: list[dict[str, Any]] = []
    used_names: set[str] = set()
    for _ in range(company_count):
        country = rng.choices(COUNTRIES, weights)[0]
        city, area, postal = rng.choice(country.cities)
        industry = rng.choice(INDUSTRIES)
        word = industry[1] if country.code == "TR" else industry[2] if country.code == "DE" else industry[3]
        for _attempt in range(20):
            name = f"{fake[country.locale].last_name()} {word} {rng.choice(country.company_forms)}"
            if name not in used_names:
                break
        used_names.add(name)
        domain = f"{_slug(name.split(' ')[0])}-{_slug(word)}.{country.tld}"
        companies.append({
            "name": name, "website": f"https://www.{domain}", "email": f"info@{domain}",
            "phone": phone(country, False, area), "industry": industry[0], "street": street(country),
            "city": city, "postal_code": postal(rng), "country": country.code,
            "tags": rng.sample(COMPANY_TAGS, rng.choice([0, 1, 1, 2])),
            "owner_id": rng.choice(user_ids),
            "_country": country, "_domain": domain, "_area": area,
        })
    company_ids = await records.bulk_create(
        "company", [{k: v for k, v in c.items() if not k.startswith("_")} for c in companies]
    )

    # Contacts: most work at one of the companies (same country, city and e-mail domain).
    contact_rows: list[dict[str, Any]] = []
    contact_company: list[int | None] = []
    for index in range(contacts):
        linked = index < company_count or rng.random() < 0.8
        company_index = index % company_count if index < company_count else rng.randrange(company_count)
        company = companies[company_index] if linked else None
        country = company["_country"] if company else rng.choices(COUNTRIES, weights)[0]
        person = fake[country.locale]
        first, last = person.first_name(), person.last_name()
        if company:
            city, postal_code = company["city"], company["postal_code"]
            area, domain = company["_area"], company["_domain"]
        else:
            city, area, postal = rng.choice(country.cities)
            postal_code = postal(rng)
            domain = rng.choice(["gmail.com", "outlook.com", "yahoo.com", "icloud.com"])
        row: dict[str, Any] = {
            "first_name": first, "last_name": last,
            "job_title": rng.choice(JOB_TITLES) if company else None,
            "company": company_ids[company_index] if company else None,
            "city": city, "postal_code": postal_code, "country": country.code,
            "street": None if company else street(country),
            "source": rng.choice(SOURCES),
            "tags": rng.sample(CONTACT_TAGS, rng.choice([0, 0, 1, 1, 2])),
            "owner_id": company["owner_id"] if company else rng.choice(user_ids),
        }
        if rng.random() < 0.9:
            row["email"] = f"{_slug(first, '.')}.{_slug(last, '.')}{rng.choice(['', '', str(rng.randint(1, 99))])}@{domain}"
        if rng.random() < 0.55:
            row["phone"] = phone(country, False, area)
        if rng.random() < 0.8:
            row["mobile"] = phone(country, True)
        if rng.random() < 0.15:
            row["notes"] = rng.choice([
                "Met at the spring trade fair.\nInterested in the integration package.",
                "Prefers e-mail over phone calls.",
                "Decision expected after the board meeting.",
                "Former customer, returned after two years.",
            ])
        contact_rows.append({k: v for k, v in row.items() if v not in (None, [])})
        contact_company.append(company_index if company else None)
    contact_ids = await records.bulk_create("contact", contact_rows)
    contacts_of: dict[int, list[int]] = {}
    for cid, company_index in zip(contact_ids, contact_company):
        if company_index is not None:
            contacts_of.setdefault(company_index, []).append(cid)

    # Deals in the sales pipeline: open ones close in the future, won/lost ones in the past.
    pipeline = deployment.pipelines.get("sales")
    stages = [(s.name, s.kind, s.probability) for s in pipeline.stages] if pipeline else [
        ("prospecting", "open", 10), ("qualification", "open", 25), ("quote", "open", 50),
        ("negotiation", "open", 75), ("won", "won", 100), ("lost", "lost", 0),
    ]
    stage_weights = [5 if kind == "open" else 6 if kind == "won" else 4 for _, kind, _ in stages]
    deal_rows: list[dict[str, Any]] = []
    deal_meta: list[tuple[int, int | None, str]] = []
    for _ in range(round(company_count * 1.5)):
        company_index = rng.randrange(company_count)
        company = companies[company_index]
        people = contacts_of.get(company_index) or [None]
        contact_id = rng.choice(people)
        product, low, high = rng.choice(PRODUCTS)
        stage, kind, probability = rng.choices(stages, stage_weights)[0]
        currency = home if rng.random() < 0.7 else rng.choice(["EUR", "USD"])
        amount = rng.randrange(low, high, 250)
        if kind == "open":
            close = today + dt.timedelta(days=rng.randint(5, 120))
        else:
            close = today - dt.timedelta(days=rng.randint(3, 200))
        row = {
            "name": f"{company['name'].split(' ')[0]}: {product}", "amount": _money(amount, currency),
            "pipeline": "sales", "stage": stage, "probability": probability,
            "expected_close": close.isoformat(), "company": company_ids[company_index],
            "contact": contact_id, "owner_id": company["owner_id"],
        }
        if kind == "lost":
            row["lost_reason"] = rng.choice(LOST_REASONS)
        deal_rows.append({k: v for k, v in row.items() if v is not None})
        deal_meta.append((company_index, contact_id, kind))
    deal_ids = await records.bulk_create("deal", deal_rows)

    # Activities: calls, meetings, e-mails and notes in the past; tasks due around today,
    # some of them overdue.
    activity_rows: list[dict[str, Any]] = []

    def activity(kind: str, subject: str, *, company_index: int, contact_id: int | None,
                 deal_id: int | None, when: dt.datetime, done: bool, body: str | None = None) -> None:
        row = {
            "kind": kind, "subject": subject, "due_at": when, "done": done,
            "assignee": companies[company_index]["owner_id"], "owner_id": companies[company_index]["owner_id"],
            "company": company_ids[company_index], "contact": contact_id, "deal": deal_id, "body": body,
        }
        if kind == "task" and not done and rng.random() < 0.5:
            row["remind_at"] = when - dt.timedelta(hours=1)
        activity_rows.append({k: v for k, v in row.items() if v is not None})

    def hours_ago(days_low: int, days_high: int) -> dt.datetime:
        return now - dt.timedelta(days=rng.randint(days_low, days_high), hours=rng.randint(0, 8))

    for deal_id, (company_index, contact_id, kind) in zip(deal_ids, deal_meta):
        for _ in range(rng.randint(1, 4)):
            what = rng.choice(["call", "call", "meeting", "email", "email", "note"])
            subject = rng.choice({"call": CALL_SUBJECTS, "meeting": MEETING_SUBJECTS,
                                  "email": EMAIL_SUBJECTS, "note": NOTE_SUBJECTS}[what])
            activity(what, subject, company_index=company_index, contact_id=contact_id, deal_id=deal_id,
                     when=hours_ago(1, 90), done=True,
                     body="Summary: next steps agreed." if what in ("call", "meeting") and rng.random() < 0.5 else None)
        if kind == "open":
            roll = rng.random()
            if roll < 0.3:  # overdue
                when, done = now - dt.timedelta(days=rng.randint(1, 10)), False
            elif roll < 0.5:  # done on time
                when, done = now - dt.timedelta(days=rng.randint(1, 20)), True
            else:  # upcoming
                when, done = now + dt.timedelta(days=rng.randint(0, 14), hours=rng.randint(0, 8)), False
            activity("task", rng.choice(TASK_SUBJECTS), company_index=company_index, contact_id=contact_id,
                     deal_id=deal_id, when=when, done=done)
    for cid, company_index in zip(contact_ids, contact_company):
        if company_index is None or rng.random() < 0.5:
            continue
        what = rng.choice(["call", "email", "note", "task"])
        subject = rng.choice({"call": CALL_SUBJECTS, "email": EMAIL_SUBJECTS, "note": NOTE_SUBJECTS,
                              "task": TASK_SUBJECTS}[what])
        if what == "task":
            when = now + dt.timedelta(days=rng.randint(-7, 21))
            done = when < now and rng.random() < 0.5
        else:
            when, done = hours_ago(1, 120), True
        activity(what, subject, company_index=company_index, contact_id=cid, deal_id=None, when=when, done=done)
    activity_ids = await records.bulk_create("activity", activity_rows)
    rules = await _demo_automation(deployment)

    return {
        "user": created, "company": len(company_ids), "contact": len(contact_ids),
        "deal": len(deal_ids), "activity": len(activity_ids), "rule": rules,
    }


#: The demo's automation: a website form's leads get a call within 15 minutes or their owner's
#: manager hears of it; won deals are announced; owners are reminded two days before a deal's
#: expected close.
DEMO_RULES: list[dict[str, Any]] = [
    {"name": "web-lead-call", "description": "A call within 15 minutes for every lead from the website",
     "entity": "contact", "trigger": {"type": "created"},
     "condition": {"field": "source", "op": "startswith", "value": "web form"},
     "actions": [{"type": "create_task", "kind": "call", "subject": "Call {{ record.first_name }} {{ record.last_name }}",
                  "assignee": "owner", "due": "15m", "remind": "5m"}]},
    {"name": "web-lead-sla", "description": "The owner's manager hears of a website lead not called within 15 minutes",
     "entity": "contact", "trigger": {"type": "created", "delay": "15m"},
     "condition": {"field": "source", "op": "startswith", "value": "web form"},
     "unless": {"has": {"entity": "activity", "via": "contact", "filter": {"and": [
         {"field": "kind", "op": "in", "value": ["call", "email", "meeting"]}, {"field": "done", "op": "eq", "value": True}]}}},
     "actions": [{"type": "notify", "to": "owner_manager", "title": "Lead {{ record.last_name }} not called within 15 minutes",
                  "body": "{{ record.phone }} {{ record.email }}"}]},
    {"name": "deal-won", "description": "Sales managers hear of every won deal",
     "entity": "deal", "trigger": {"type": "stage_entered", "stage": "won"},
     "actions": [{"type": "notify", "to": {"role": "sales_manager"}, "title": "Won: {{ record.name }} ({{ record.amount }})"}]},
    {"name": "close-date-reminder", "description": "Owners are reminded two days before a deal's expected close",
     "entity": "deal", "trigger": {"type": "date", "field": "expected_close", "offset": "-2d"},
     "condition": {"field": "stage", "op": "in", "value": ["prospecting", "qualification", "quote", "negotiation"]},
     "actions": [{"type": "notify", "to": "owner", "title": "{{ record.name }} is expected to close on {{ record.expected_close }}"}]},
]


async def _demo_automation(deployment: Any) -> int:
    """Agents get their team's sales manager as manager; the website form and :data:`DEMO_RULES`."""
    from .auth.permissions import SYSTEM
    from .webforms import WebForm

    users = await deployment.auth.users()
    managers = {team: u["id"] for u in users if u["role"] == "sales_manager" for team in u["teams"][:1]}
    for user in users:
        manager = managers.get(user["teams"][0]) if user["role"] == "agent" and user["teams"] else None
        if manager is not None:
            await deployment.records.update("user", user["id"], {"manager": manager})
    agents = [u["id"] for u in users if u["role"] == "agent"]
    if agents and "contact-us" not in {form.name for form in await deployment.forms.list()}:
        await deployment.forms.save(WebForm(
            name="contact-us", fields={"name": "first_name", "surname": "last_name", "tel": "phone", "mail": "email",
                                       "message": "notes"}, required=["surname"], owner_id=agents[0]))
    existing = {rule.name for rule in await deployment.automation.list()}
    made = 0
    for rule in DEMO_RULES:
        if rule["name"] not in existing:
            await deployment.automation.create(rule, actor=SYSTEM)
            made += 1
    return made
