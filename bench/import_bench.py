"""How fast ``crm import`` goes: N contacts (first and last name, e-mail, a phone as people type
it, a city) written to a CSV, then imported into a fresh SQLite deployment with the defaults
(dedup by e-mail and phone, phones normalised to E.164), timed; a second CSV export is timed too.

    .venv/bin/python bench/import_bench.py                 # 1,000,000 rows
    .venv/bin/python bench/import_bench.py --rows 50000    # quick

The baseline, measured in the same run: the least a hand-written script does for the same
result. ``csv.reader``, e-mails lower-cased, phones normalised by the same library
(phonenumbers), duplicates dropped through a dict, ``executemany`` in batches of the same size
into a copy of crm_contact (same columns, indexes, pragmas) in another file. crmcore also fills
the search index, writes the audit trail, runs hooks and permission checks and reports every
rejected row; the ratio says what that costs.

Not a test: it prints rows/s and the ratio; the target (issue 6) is 1 M rows in under a minute
on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import csv
import pstats
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import crmcore  # noqa: E402
from crmcore.auth import SYSTEM  # noqa: E402
from crmcore.fieldvalues import normalize_phone  # noqa: E402
from crmcore.importing import BATCH  # noqa: E402
from run import sqlite_copy  # noqa: E402  (bench/run.py)

FIRST = ["Ayşe", "Mehmet", "Emily", "John", "Zeynep", "Can", "Deniz", "Maria", "Ali", "Elif"]
LAST = ["Yılmaz", "Demir", "Clarke", "Smith", "Kaya", "Arslan", "Çelik", "Öztürk", "Brown", "Doğan"]
CITIES = ["Izmir", "Istanbul", "Ankara", "Bursa", "London", "Berlin"]
DOMAINS = ["example.com", "mail.example.org", "firma.com.tr", "shop.example.net"]


def write_csv(path: Path, rows: int) -> None:
    rnd = random.Random(6)
    with open(path, "w", encoding="utf-8", newline="") as f:
        out = csv.writer(f)
        out.writerow(["First name", "Surname", "E-mail", "Tel", "City"])
        for i in range(rows):
            phone = f"0532 {i // 10000 % 1000:03d} {i // 100 % 100:02d} {i % 100:02d}" if i % 3 else ""
            out.writerow([rnd.choice(FIRST), rnd.choice(LAST), f"person{i}@{rnd.choice(DOMAINS)}", phone,
                          rnd.choice(CITIES)])


def raw_import(source: Path, crm_db: Path, target: Path, region: str) -> int:
    """The baseline (see the module's docstring); the number of rows written."""
    conn = sqlite_copy(crm_db, target, ["crm_contact"])
    insert = ('INSERT INTO crm_contact ("first_name", "last_name", "email", "phone", "phone__raw", "city") '
              'VALUES (?, ?, ?, ?, ?, ?)')
    seen: set[str] = set()
    written = 0
    with open(source, encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        next(reader)
        batch: list[tuple] = []
        for first, last, email, phone, city in reader:
            email = email.strip().lower()
            e164 = normalize_phone(phone, region) if phone.strip() else None
            keys = [k for k in (email, e164) if k]
            if any(k in seen for k in keys):
                continue
            seen.update(keys)
            batch.append((first.strip(), last.strip(), email, e164, phone.strip() or None, city.strip()))
            if len(batch) >= BATCH:
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(insert, batch)
                conn.execute("COMMIT")
                written += len(batch)
                batch = []
        if batch:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(insert, batch)
            conn.execute("COMMIT")
            written += len(batch)
    conn.close()
    return written


async def run(rows: int, profile: bool, sort: str = "tottime") -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "dep"
        crmcore.init_deployment(folder, region="TR", currency="TRY")
        source = Path(tmp) / "contacts.csv"
        started = time.perf_counter()
        write_csv(source, rows)
        print(f"wrote {rows:,} rows ({source.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - started:.1f} s")
        async with await crmcore.Deployment.open(folder) as dep:
            profiler = cProfile.Profile() if profile else None
            started = time.perf_counter()
            if profiler:
                profiler.enable()
            result = await dep.imports.import_file(source, "contact", actor=SYSTEM)
            if profiler:
                profiler.disable()
            took = time.perf_counter() - started
            print(f"import: {result.summary()} in {took:.1f} s = {rows / took:,.0f} rows/s")
            started = time.perf_counter()
            written = raw_import(source, folder / "crm.db", Path(tmp) / "raw.db", region="TR")
            raw_took = time.perf_counter() - started
            print(f"baseline (hand-written script): {written:,} rows in {raw_took:.1f} s = {rows / raw_took:,.0f} rows/s; "
                  f"crmcore/baseline = {raw_took / took:.2f}")
            started = time.perf_counter()
            with open(Path(tmp) / "out.csv", "wb") as f:
                count = await dep.exports.export("contact", f, fmt="csv", actor=SYSTEM)
            took = time.perf_counter() - started
            print(f"export: {count:,} rows in {took:.1f} s = {count / took:,.0f} rows/s")
            if profiler:
                pstats.Stats(profiler).sort_stats(sort).print_stats(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--profile", action="store_true", help="print where the import's time goes")
    args = parser.parse_args()
    asyncio.run(run(args.rows, args.profile))


if __name__ == "__main__":
    main()
