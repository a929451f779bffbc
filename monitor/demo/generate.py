"""Writes the embedded demo's news stream (news.jsonl): fictional companies, written for bearwatch.

    python -m monitor.demo.generate > monitor/demo/news.jsonl

Two days of background news (daily rhythm, every topic, mostly neutral) for eight made-up
companies, one negative episode (Halcyon Software, a data breach that snowballs), a few re-posted
duplicates and a handful of malformed messages that must end in the dead-letter output.
Deterministic: the same seed writes the same file.
"""

from __future__ import annotations

import json
import random
import sys
from datetime import datetime, timedelta, timezone

COMPANIES = {
    "QLMN": "Quillmont Minerals",
    "BRKW": "Brackwater Logistics",
    "VNTH": "Veranthe Therapeutics",
    "DNMO": "Dunmore Motorworks",
    "ELMB": "Elmstead Bancorp",
    "FRLX": "Fairlux Airways",
    "GRPK": "Granite Peak Energy",
    "HLCY": "Halcyon Software",
}
NEUTRAL = [
    "{name} to present at {city} industry conference",
    "{name} schedules earnings call for {day}",
    "{name} names {city} executive as chief operating officer",
    "{name} files annual report, {n} pages, with regulator",
    "{name} opens regional office in {city}",
    "{name} shareholders approve board slate at {city} meeting",
    "{name} completes previously announced ${n} million debt refinancing",
    "{name} confirms dividend payment date of {day}",
]
BULLISH = [
    "{name} raises full-year guidance by {pct}% after strong quarter",
    "{name} shares jump {pct}% as revenue beats estimates",
    "Analysts at {bank} upgrade {name} to buy on margin outlook",
    "{name} wins ${n} million contract with {city} rail operator",
    "{name} announces share buyback of ${n} million",
    "{name} raises quarterly dividend by {pct}%",
]
BEARISH = [
    "{name} shares slide {pct}% after weak order intake",
    "{name} cuts outlook as costs rise in {city} plant",
    "{bank} downgrades {name} to sell, citing slowing demand",
    "{name} misses quarterly profit estimates by ${n} million",
]
CITIES = ["Lisbon", "Denver", "Osaka", "Toronto", "Rotterdam", "Austin", "Leeds", "Monterrey"]
BANKS = ["Harbor Securities", "Pinecrest Capital", "Meridian Research", "Northgate Partners"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"]
MARKET = [
    "Central bank holds rates steady, {bank} sees {n} basis points of cuts next year",
    "Treasury yields edge higher ahead of {day} jobs data",
    "Oil prices steady near ${n} as supply concerns ease",
    "Stocks open mixed on {day} as investors weigh earnings season",
    "Gold climbs {pct}% as dollar softens",
    "Euro slips against the dollar after weak {city} factory data",
]
EPISODE = [
    "Halcyon Software discloses data breach affecting {n},000 customer accounts",
    "Halcyon Software shares plunge {pct}% after breach disclosure",
    "Regulators in {city} open investigation into Halcyon Software data breach",
    "Halcyon Software faces class action lawsuit in {city} over breach",
    "{bank} downgrades Halcyon Software to sell after breach",
    "Bank clients in {city} suspend contracts with Halcyon Software",
    "Halcyon Software breach larger than first reported, {n},000 more accounts exposed",
    "Halcyon Software withdraws annual guidance amid breach fallout, sees ${n} million hit",
    "Halcyon Software chief security officer resigns after breach, {city} office closed",
    "Ratings agency puts Halcyon Software on negative watch, cites ${n} million breach costs",
    "Halcyon Software shares hit three-year low, down {pct}% since breach",
    "Lawmakers call for {day} hearing on Halcyon Software breach",
]


def fill(template: str, rng: random.Random, name: str = "") -> str:
    return template.format(
        name=name,
        city=rng.choice(CITIES),
        bank=rng.choice(BANKS),
        day=rng.choice(DAYS),
        n=rng.randint(12, 900),
        pct=rng.randint(3, 28),
    )


SOURCES = ["Wirefeed", "Market Ledger", "Daily Ticker", "Coastline Business"]
START = datetime(2026, 11, 2, 0, 0, tzinfo=timezone.utc)
HOURS = 48
EPISODE_START = 30  # hours after START


def hourly_rate(hour: int) -> float:
    """Items per hour: busy in (New York) market hours, quiet at night."""
    local = (hour - 5) % 24
    return 14.0 if 8 <= local < 17 else 3.0


def items(rng: random.Random) -> list[dict]:
    out = []
    n = 0
    for hour in range(HOURS):
        count = rng.randint(int(hourly_rate(hour) * 0.7), int(hourly_rate(hour) * 1.3))
        for _ in range(count):
            n += 1
            ticker = rng.choice(list(COMPANIES))
            roll = rng.random()
            if roll < 0.18:
                headline, tickers = fill(rng.choice(MARKET), rng), []
            else:
                pool = NEUTRAL if roll < 0.70 else BULLISH if roll < 0.88 else BEARISH
                headline, tickers = fill(rng.choice(pool), rng, COMPANIES[ticker]), [ticker]
            published = START + timedelta(hours=hour, seconds=rng.randint(0, 3599))
            out.append(
                {
                    "id": f"demo-{n:05d}",
                    "published_at": published.isoformat().replace("+00:00", "Z"),
                    "headline": headline,
                    "source": rng.choice(SOURCES),
                    "tickers": tickers,
                    "url": f"https://news.example/{n:05d}",
                    "lang": "en",
                }
            )
        if EPISODE_START <= hour < EPISODE_START + 4:
            for _ in range(16):
                n += 1
                published = START + timedelta(hours=hour, seconds=rng.randint(0, 3599))
                out.append(
                    {
                        "id": f"demo-{n:05d}",
                        "published_at": published.isoformat().replace("+00:00", "Z"),
                        "headline": fill(rng.choice(EPISODE), rng),
                        "source": rng.choice(SOURCES),
                        "tickers": ["HLCY"],
                        "url": f"https://news.example/{n:05d}",
                        "lang": "en",
                    }
                )
    out.sort(key=lambda d: str(d["published_at"]))
    return out


def lines(seed: int = 7) -> list[bytes]:
    rng = random.Random(seed)
    stream = [json.dumps(d).encode() for d in items(rng)]
    # The same story re-posted by a second outlet (a text duplicate), and a redelivered message.
    repost = json.loads(stream[100])
    repost.update(id="demo-repost-1", source="Aggregator", url="https://aggregator.example/1")
    stream.insert(103, json.dumps(repost).encode())
    stream.insert(205, stream[200])
    malformed = [
        b"this is not json",
        b'{"id": "bad-1", "headline": "No timestamp here"}',
        b'{"id": "bad-2", "published_at": "2026-11-02T10:00:00Z", "headline": "   "}',
        b'{"id": "bad-3", "published_at": "yesterday", "headline": "Unparseable time"}',
        b'{"published_at": "2026-11-02T10:00:00Z", "headline": "Missing id"}',
        b'{"id": "bad-4", "published_at": "2026-11-02T10:00:00Z", "headline": "Bad bytes \xff\xfe"}',
        b'{"id": "bad-5", "published_at": "2026-11-02T10:00:00Z", "headline": "Tickers wrong", "tickers": "HLCY"}',
    ]
    for i, bad in enumerate(malformed):
        stream.insert(50 + 60 * i, bad)
    return stream


if __name__ == "__main__":
    for line in lines():
        sys.stdout.buffer.write(line + b"\n")
