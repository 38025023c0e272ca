"""Deterministic, realistic-looking contact rows for the benchmark (same seed -> same rows)."""

from __future__ import annotations

import random
from collections.abc import Iterator

FIRST = (
    "Ada Alan Alice Amir Ana Andrea Anna Arjun Aylin Ben Berk Carla Carlos Chen Chloe Clara Daniel "
    "David Deniz Diego Elena Elif Emily Emma Eric Fatma Felix Fernando Gabriel Grace Hana Hannah "
    "Hugo Ibrahim Ines Isabel Ivan Jack James Jana Javier Jin Johan John Jonas Jose Julia Kai Kemal "
    "Laura Lea Leo Lina Lucas Lucia Luis Maria Marie Mario Mark Martin Maya Mehmet Mia Michael Mina "
    "Mohamed Nadia Nina Noah Nora Olga Omar Oscar Paul Pedro Peter Priya Rafael Rana Rosa Sami Sara "
    "Selin Sofia Sophie Stefan Sven Tariq Thomas Tim Tomas Yusuf Zeynep Zoe"
).split()
LAST = (
    "Abbott Adams Aksoy Almeida Alvarez Andersen Arslan Bailey Baker Becker Bennett Berg Bianchi "
    "Brown Bruno Castro Celik Chen Clark Costa Cruz Demir Diaz Dogan Dubois Duarte Eriksson Evans "
    "Fernandez Fischer Fontaine Garcia Gomez Gonzalez Gray Green Gunes Hall Hansen Harris Hoffmann "
    "Hughes Jansen Johansson Johnson Jones Kaya Keller Kim Klein Koch Kowalski Kurt Lambert Larsen "
    "Laurent Lee Lewis Lindberg Lopez Marin Marino Martin Martinez Martins Meyer Miller Moreau "
    "Morris Muller Murphy Nguyen Nielsen Novak Ozturk Park Perez Petit Petrov Popescu Ramos Reyes "
    "Ricci Richter Rivera Roberts Rodriguez Romano Rossi Roux Sahin Sanchez Santos Schmidt "
    "Schneider Schulz Silva Simon Smith Sousa Taylor Thomas Torres Turner Vargas Walker Wang "
    "Weber Wilson Wolf Wright Yildiz Yilmaz Young Zhang"
).split()
CITIES = (
    "Istanbul Izmir Ankara Berlin Hamburg Munich Paris Lyon Marseille Madrid Barcelona Valencia "
    "Lisbon Porto Rome Milan Naples Vienna Zurich Geneva Amsterdam Rotterdam Brussels Antwerp "
    "London Manchester Dublin Copenhagen Stockholm Oslo Helsinki Warsaw Krakow Prague Budapest "
    "Bucharest Athens Sofia Zagreb Belgrade"
).split()
DOMAINS = (
    "example.com example.org example.net mail.example.com acme-corp.com globex.com initech.com "
    "umbrella-corp.com stark-industries.com hooli.com"
).split()
SEGMENTS = ["enterprise", "mid_market", "smb", "startup", "public_sector", "nonprofit", "partner", "consumer"]
SEGMENT_WEIGHTS = [5, 12, 30, 18, 6, 4, 3, 22]
# Zipf-like city weights: a few big cities, a long tail.
CITY_WEIGHTS = [1.0 / (i + 1) ** 0.8 for i in range(len(CITIES))]
# Synthetic surname variants so last names are many (~4k distinct), not a hundred.
SUFFIXES = ["", "", "", "", "son", "sen", "er", "ini", "ova", "ez", "oglu", "ski", "berg", "man", "ley", "ton", "ford", "well", "ard", "eau", "ic", "as", "os", "us", "ek", "in", "o", "a", "i", "e", "y"]


def last_names() -> list[str]:
    return [base + suffix for base in LAST for suffix in dict.fromkeys(SUFFIXES)]


def search_prefixes(count: int, seed: int = 7) -> list[str]:
    """Last-name prefixes (4 letters) users would type into a search box."""
    rnd = random.Random(seed)
    return [rnd.choice(LAST)[:4].lower() for _ in range(count)]


def contacts(total: int, batch: int, owner_ids: list[int], seed: int = 42) -> Iterator[list[dict]]:
    """``total`` contact rows in batches of ``batch``: first/last name, email, city, segment, score, owner."""
    rnd = random.Random(seed)
    lasts = last_names()
    choice, choices, randrange = rnd.choice, rnd.choices, rnd.randrange
    done = 0
    while done < total:
        n = min(batch, total - done)
        cities = choices(CITIES, CITY_WEIGHTS, k=n)
        segments = choices(SEGMENTS, SEGMENT_WEIGHTS, k=n)
        rows = []
        for i in range(n):
            first, last = choice(FIRST), choice(lasts)
            rows.append({
                "first_name": first,
                "last_name": last,
                "email": f"{first.lower()}.{last.lower()}{done + i}@{choice(DOMAINS)}",
                "city": cities[i],
                "segment": segments[i],
                "score": randrange(0, 1000),
                "owner_id": choice(owner_ids),
            })
        done += n
        yield rows
