"""The real-data suite's pieces (ground truth from prices, scoring, the naive rule) on small
constructed inputs, and the detector's behaviour that real data asked for: busy keys stay
sighted, multi-ticker items count for a share, `detect series` raises one flag per episode."""

from __future__ import annotations

import csv
import json
import random
from dataclasses import replace
from datetime import date, datetime, timedelta, timezone

import pytest

from monitor.detection.counts import CountSpike, CountSpikeConfig
from monitor.detection.series import Point, anomaly_score, detect, slot_of
from monitor.detection.stocknet import (
    Event,
    Raised,
    calendar_days,
    call_relevance,
    format_paired,
    naive_alerts,
    paired_models,
    price_events,
    score,
    stream_items,
    with_tweets,
)
from monitor.detection.tracker import NewsTracker, TrackerConfig
from monitor.records import ScoredEvent

START = datetime(2026, 1, 5, tzinfo=timezone.utc)


def write_prices(path, drops: dict[tuple[str, int], float], market: dict[int, float] | None = None) -> list[date]:
    rng = random.Random(0)
    days = [
        date(2015, 1, 1) + timedelta(days=i) for i in range(120) if (date(2015, 1, 1) + timedelta(days=i)).weekday() < 5
    ]
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["date", "ticker", "open", "high", "low", "close", "adj_close", "volume"])
        for ticker in ("AAA", "BBB", "CCC", "DDD", "EEE"):
            price = 100.0
            for i, d in enumerate(days):
                if i:
                    price *= 1 + rng.gauss(0, 0.005) + (market or {}).get(i, 0.0) + drops.get((ticker, i), 0.0)
                w.writerow([d.isoformat(), ticker, price, price, price, price, f"{price:.6f}", 1000])
    return days


def test_a_ticker_that_falls_far_more_than_the_market_is_an_event_and_a_market_wide_fall_is_not(tmp_path) -> None:
    days = write_prices(tmp_path / "p.csv", {("CCC", 40): -0.10}, market={60: -0.06})
    events = price_events(tmp_path / "p.csv")
    assert [(e.ticker, e.day) for e in events] == [("CCC", days[40])]
    e = events[0]
    assert e.residual < -0.08
    # the span: from the previous session's close (16:00 New York) to the end of the day in New York
    assert e.span_start == datetime(days[39].year, days[39].month, days[39].day, 21, tzinfo=timezone.utc)
    assert e.span_end - e.span_start > timedelta(hours=24)


def test_precision_recall_and_delay_against_events() -> None:
    span = (START, START + timedelta(hours=32))
    events = [
        Event("AAA", date(2026, 1, 6), -0.08, *span, tweets=12, first_negative=START + timedelta(hours=2)),
        Event("BBB", date(2026, 1, 6), -0.07, *span, tweets=12, first_negative=START + timedelta(hours=3)),
        Event("CCC", date(2026, 1, 6), -0.09, *span, tweets=2),  # too few tweets to be seen: not in recall
    ]
    raised = [
        Raised("AAA", START + timedelta(hours=3), START),  # relevant, 60 minutes after the first negative
        Raised("CCC", START + timedelta(hours=5), START),  # relevant (precision counts every event)
        Raised("AAA", START + timedelta(days=3), START),  # after the span: a false alarm
        Raised("DDD", START + timedelta(hours=1), START),  # no event at all
    ]
    s = score(raised, events, tickers=4, weeks=1.0)
    assert (s.alerts, s.relevant, s.covered, s.detected) == (4, 2, 2, 1)
    assert s.precision == 0.5 and s.recall == 0.5 and s.delays_min == [60.0]
    assert s.as_dict()["alerts_per_ticker_week"] == 1.0


def test_the_naive_rule_needs_three_negatives_above_three_sigma_of_its_month() -> None:
    stream = [
        ScoredEvent(f"q{d}", START + timedelta(days=d, hours=12), d % 7 == 0, 0.9, "Macro", ("AAA",)) for d in range(35)
    ]
    burst = [
        ScoredEvent(f"b{i}", START + timedelta(days=35, hours=10 + i), True, 0.9, "Macro", ("AAA",)) for i in range(3)
    ]
    pair = [
        ScoredEvent(f"p{i}", START + timedelta(days=37, hours=10 + i), True, 0.9, "Macro", ("BBB",)) for i in range(2)
    ]
    days = calendar_days(stream + burst + pair)
    raised = naive_alerts(stream + burst + pair, days)
    assert [(r.ticker, r.at) for r in raised] == [("AAA", datetime(2026, 2, 10, tzinfo=timezone.utc))]


def test_the_stream_keeps_one_item_per_tweet_with_all_its_tickers(tmp_path) -> None:
    path = tmp_path / "t.csv"
    path.write_text(
        "created_at,ticker,tweet_id,text,lang,is_retweet,file_date\n"
        "2014-01-01T10:00:00Z,AAPL,1,$AAPL $GOOG down,en,false,2014-01-01\n"
        "2014-01-01T10:00:00Z,GOOG,1,$AAPL $GOOG down,en,false,2014-01-01\n"
        "2014-01-01T11:00:00Z,MSFT,2,$MSFT up,,false,2014-01-01\n"
    )
    items = stream_items(path)
    assert [(i["id"], i["tickers"]) for i in items] == [("stocknet-1", ["AAPL", "GOOG"]), ("stocknet-2", ["MSFT"])]
    assert "lang" not in items[1]
    negative = ScoredEvent(
        "stocknet-1", datetime(2014, 1, 1, 10, tzinfo=timezone.utc), True, 0.9, "Macro", ("AAPL", "GOOG")
    )
    span = (datetime(2013, 12, 31, 21, tzinfo=timezone.utc), datetime(2014, 1, 2, 5, tzinfo=timezone.utc))
    (e,) = with_tweets([Event("AAPL", date(2014, 1, 1), -0.05, *span)], [negative])
    assert e.tweets == 1 and e.first_negative == negative.published_at


def test_the_model_calls_are_judged_against_the_spans_of_the_tickers_they_name() -> None:
    span = (datetime(2014, 1, 1, 21, tzinfo=timezone.utc), datetime(2014, 1, 3, 5, tzinfo=timezone.utc))
    events = [Event("AAA", date(2014, 1, 2), -0.06, *span)]
    at = datetime(2014, 1, 2, 14, tzinfo=timezone.utc)
    later = at + timedelta(days=5)

    def tweet(i: int, when: datetime, negative: bool, *tickers: str) -> ScoredEvent:
        return ScoredEvent(f"t{i}", when, negative, 0.9 if negative else 0.1, "Macro", tickers)

    stream = [
        tweet(0, at, True, "AAA"),  # a bearish call in the span: right
        tweet(1, at, True, "BBB", "AAA"),  # names the falling ticker among others: in its span too
        tweet(2, at, True, "BBB"),  # the same hour, another ticker: not in any span
        tweet(3, at, False, "AAA"),  # in the span, not called bearish: missed
        tweet(4, later, True, "AAA"),  # the same ticker, days later: not in the span
        tweet(5, later, False, "CCC"),
        tweet(6, span[0], True, "AAA"),  # at the previous close itself: the span starts after it
        tweet(7, later, False, "CCC"),
    ]
    c = call_relevance(stream, events)
    assert (c["tweets"], c["called_bearish"], c["tweets_in_event_spans"], c["bearish_calls_in_event_spans"]) == (
        8,
        5,
        3,
        2,
    )
    assert c["span_precision"] == 0.4 and c["span_recall"] == round(2 / 3, 4)
    assert c["lift"] == round(0.4 / (3 / 8), 3)
    lo, hi = c["span_precision_95"]
    assert lo < 0.4 < hi and 0 < lo and hi < 1
    assert call_relevance([], events)["lift"] is None


def test_two_models_on_one_stream_are_compared_ticker_by_ticker(tmp_path) -> None:
    days = write_prices(tmp_path / "p.csv", {("CCC", 40): -0.10})
    at = [datetime(d.year, d.month, d.day, 15, tzinfo=timezone.utc) for d in days]
    quiet = [(f"q{t}{i}", at[i], t) for i in range(40) for t in ("AAA", "CCC")]
    bad_day = [(f"b{j}", at[40] + timedelta(minutes=20 * j), "CCC") for j in range(5)]  # in CCC's span

    def scored(calls_the_bad_day: bool) -> list[ScoredEvent]:
        return [
            ScoredEvent(i, when, negative, 0.95 if negative else 0.05, "Macro", (t,))
            for i, when, t in quiet + bad_day
            for negative in [calls_the_bad_day and i.startswith("b")]
        ]

    found = paired_models({"a": scored(False), "b": scored(True)}, tmp_path / "p.csv", resamples=200)
    a, b = found["models"]["a"], found["models"]["b"]
    assert (a["called_bearish"], b["called_bearish"]) == (0, 5)
    assert (a["detected"], b["detected"], b["covered_events"]) == (0, 1, 1)
    assert b["span_recall"] == 1.0 and b["alert_precision"] == 1.0 and b["alerts"] == 1
    assert found["difference"]["span_recall"] == {"value": 1.0, "95": [1.0, 1.0]}
    assert found["difference"]["event_recall"]["value"] == 1.0
    assert found["units"] == 2  # the tickers with a tweet or an event
    assert a["span_precision"] is None  # no bearish call: nothing to divide by, and no NaN in the JSON
    text = format_paired(found)
    assert "95% interval over 200 resamples of the 2 tickers" in text and "a model with nothing to count" in text
    with pytest.raises(ValueError, match="not of the same stream"):
        paired_models({"a": scored(False), "b": scored(True)[1:]}, tmp_path / "p.csv")


# --- the detector on what real data asked for ---------------------------------------------------
def run(events: list[ScoredEvent], config: TrackerConfig | None = None) -> list:
    tracker = NewsTracker(config)
    alerts = []
    for e in sorted(events, key=lambda e: (e.published_at, e.id)):
        alerts += tracker.add(e)
    return alerts + tracker.flush(events[-1].published_at + timedelta(hours=3))


def quiet_market(days: int = 5) -> list[ScoredEvent]:
    """One neutral item a quarter-hour about a market without tickers: the tickers below are quiet."""
    return [ScoredEvent(f"m{i}", START + timedelta(minutes=15 * i + 3), False, 0.05, "Macro") for i in range(days * 96)]


def burst(tickers: tuple[str, ...], n: int, at: timedelta) -> list[ScoredEvent]:
    return [
        ScoredEvent(f"x{i}-{'-'.join(tickers)}", START + at + timedelta(minutes=4 * i), True, 0.95, "Macro", tickers)
        for i in range(n)
    ]


def test_items_naming_many_tickers_count_for_a_share_and_the_alert_says_so() -> None:
    spam = ("AAA", "BBB", "CCC", "DDD", "EEE", "FFF", "GGG", "HHH")
    alerts = run(quiet_market() + burst(spam, 5, timedelta(days=4, hours=15)))
    assert not [a for a in alerts if a.key.startswith("ticker:")]  # 5 × 2/8 = 1.25 each: not a spike of any
    alerts = run(quiet_market() + burst(("AAA",), 5, timedelta(days=4, hours=15)))
    opened = [a for a in alerts if a.key == "ticker:AAA" and a.status == "opened"]
    assert len(opened) == 1 and opened[0].shared == 0
    alerts = run(quiet_market() + burst(("AAA", "BBB", "CCC"), 8, timedelta(days=4, hours=15)))
    opened = [a for a in alerts if a.key == "ticker:AAA" and a.status == "opened"]
    assert len(opened) == 1 and opened[0].shared >= 3  # 2/3 each: still a spike, and it says why it counts less


def test_a_burst_on_a_quiet_ticker_alerts_in_the_window_it_happens_and_the_episode_ends() -> None:
    alerts = run(quiet_market() + burst(("AAA",), 6, timedelta(days=4, hours=15, minutes=1)))
    aaa = [a for a in alerts if a.key == "ticker:AAA"]
    opened = [a for a in aaa if a.status == "opened"]
    assert len(opened) == 1
    # Its third negative (15:09) is checked at the next early point, inside its first bucket.
    assert opened[0].window_end == START + timedelta(days=4, hours=15, minutes=10)
    assert [a.status for a in aaa][-1] == "ended"
    late = run(quiet_market() + burst(("AAA",), 6, timedelta(days=4, hours=15, minutes=1)), TrackerConfig(early=None))
    (at_close,) = [a for a in late if a.key == "ticker:AAA" and a.status == "opened"]
    assert at_close.id == opened[0].id and at_close.window_end == START + timedelta(days=4, hours=15, minutes=15)


def test_an_early_check_pages_once_the_watermark_passes_its_point_before_the_bucket_closes() -> None:
    events = sorted(
        quiet_market() + burst(("AAA",), 6, timedelta(days=4, hours=15, minutes=1)), key=lambda e: e.published_at
    )
    tracker = NewsTracker()
    for e in events:
        got = [a for a in tracker.add(e) if a.key == "ticker:AAA" and a.status == "opened"]
        if got:
            break
    # The item that moves the watermark (its time minus the 2-minute allowance) past 15:10.
    assert e.published_at == START + timedelta(days=4, hours=15, minutes=13)
    assert got[0].window_end == START + timedelta(days=4, hours=15, minutes=10)
    assert tracker.next_close == START + timedelta(days=4, hours=15)  # its bucket is still open


def test_early_checks_do_not_depend_on_how_the_watermark_moves_nor_on_a_restart() -> None:
    """Step by step (one partition), or in one jump (the market's partition drained first, the
    burst's second), or with a restart right after the early alert: the same alerts, raised at the
    same moments."""
    market, wave = quiet_market(), burst(("AAA",), 6, timedelta(days=4, hours=15, minutes=1))

    def on(events: list[ScoredEvent], source: str, partitions: int) -> list[ScoredEvent]:
        return [replace(e, source=source, partitions=partitions) for e in events]

    def seen(alerts: list) -> list:
        return sorted((a.id, a.status, a.window_end) for a in alerts)

    reference = seen(run(market + wave))
    assert any(status == "opened" and at.minute == 10 for _, status, at in reference)
    tracker, jumped = NewsTracker(), []
    for e in on(wave, "news/0", 2) + on(market, "news/1", 2):  # the market's items then move it 15 minutes a step
        jumped += tracker.add(e)
    jumped += tracker.caught_up("news/0", 2) + tracker.caught_up("news/1", 2) + tracker.finish()
    assert seen(jumped) == reference

    events = sorted(market + wave, key=lambda e: (e.published_at, e.id))
    tracker, alerts, stop = NewsTracker(), [], 0
    while not any(a.status == "opened" and a.key == "ticker:AAA" for a in alerts):
        alerts += tracker.add(events[stop])
        stop += 1
    tracker = NewsTracker.restore(json.loads(json.dumps(tracker.snapshot())))
    for e in events[stop - 3 :]:  # a replay overlapping what the snapshot had seen
        alerts += tracker.add(e)
    alerts += tracker.flush(events[-1].published_at + timedelta(hours=3))
    assert seen(alerts) == reference


def test_uncertain_bearish_calls_do_not_page() -> None:
    """The same burst, once confidently bearish and once barely (the model's argmax, p 0.6): only
    the first alerts; the floor is on the mean of the window's three most bearish items."""
    at = timedelta(days=4, hours=15, minutes=1)
    sure = run(quiet_market() + burst(("AAA",), 6, at))
    unsure = run(quiet_market() + [replace(e, p_bearish=0.6) for e in burst(("AAA",), 6, at)])
    assert [a for a in sure if a.key == "ticker:AAA" and a.status == "opened"]
    assert not [a for a in unsure if a.key == "ticker:AAA"]
    anyway = run(
        quiet_market() + [replace(e, p_bearish=0.6) for e in burst(("AAA",), 6, at)], TrackerConfig(min_confidence=0)
    )
    assert [a for a in anyway if a.key == "ticker:AAA" and a.status == "opened"]


def test_a_slow_wave_over_a_day_is_seen_by_the_day_window() -> None:
    """Seven bearish items spread over eighteen hours, never more than one an hour, on a ticker
    that gets about one a week (MSFT on 2015-01-27 had this shape): only the 24-hour window sees it."""
    background = [
        ScoredEvent(f"w{d}", START + timedelta(days=d, hours=14), d % 7 == 3, 0.6, "Macro", ("AAA",)) for d in range(14)
    ]
    wave = [
        ScoredEvent(f"v{i}", START + timedelta(days=14, hours=2 + 2.5 * i), True, 0.9, "Macro", ("AAA",))
        for i in range(7)
    ]
    events = quiet_market(16) + background + wave
    assert [a for a in run(events) if a.key == "ticker:AAA" and a.status == "opened"]
    short = TrackerConfig(scales=(1, 4, 16))
    assert not [a for a in run(events, short) if a.key == "ticker:AAA" and a.status == "opened"]


def test_a_story_pages_once_while_its_day_window_holds_it_and_new_news_pages_again() -> None:
    """Six bearish tweets in half an hour page; the episode ends after two quiet hours while the day
    window still holds them, so one more bearish tweet would page the same story again. With the
    paged memory (the default) the reopening window is tested without what was paged: one more
    tweet does not page, a new burst of its own does."""
    story = burst(("AAA",), 6, timedelta(days=4, hours=10))
    follow_up = [
        ScoredEvent("f1", START + timedelta(days=4, hours=15), True, 0.97, "Macro", ("AAA",)),
        ScoredEvent("f2", START + timedelta(days=4, hours=15, minutes=5), True, 0.97, "Macro", ("AAA",)),
    ]
    usual = [
        ScoredEvent(f"u{h}", START + timedelta(hours=h, minutes=30), False, 0.05, "Macro", ("AAA",)) for h in range(120)
    ]
    events = quiet_market() + usual + story + follow_up

    def opened(alerts: list) -> list:
        return [a for a in alerts if a.key == "ticker:AAA" and a.status == "opened"]

    assert len(opened(run(events, TrackerConfig(paged_memory=None)))) == 2  # the same story, paged twice
    (once,) = opened(run(events))
    assert once.window_end < START + timedelta(days=4, hours=11)
    new_wave = [replace(e, id=f"n{i}", published_at=e.published_at + timedelta(hours=5)) for i, e in enumerate(story)]
    second = opened(run(quiet_market() + usual + story + new_wave))
    assert len(second) == 2 and second[1].window_end > START + timedelta(days=4, hours=15)
    # The memory survives a restart: a tracker restored from its snapshot after the story decides the same.
    tracker = NewsTracker()
    alerts: list = []
    ordered = sorted(events, key=lambda e: (e.published_at, e.id))
    cut = next(i for i, e in enumerate(ordered) if e.id == "f1")
    for e in ordered[:cut]:
        alerts += tracker.add(e)
    assert tracker.paged.get("ticker:AAA")
    tracker = NewsTracker.restore(json.loads(json.dumps(tracker.snapshot())))
    for e in ordered[cut:]:
        alerts += tracker.add(e)
    alerts += tracker.flush(ordered[-1].published_at + timedelta(hours=3))
    assert [a.id for a in opened(alerts)] == [once.id]


def test_no_key_goes_blind_at_ten_thousand_items_a_bucket() -> None:
    """A busy key's expected count is far past where exp(-mean) underflows (745): a burst still
    flags (the tail used to read 1.0 there), the ordinary noise still does not. (A burst must still
    be at least `min_ratio` = 2 times the usual count: significance alone is not news.)"""
    rng = random.Random(3)
    d = CountSpike(CountSpikeConfig(warmup=20))
    ordinary = [d.update(10_000 + rng.gauss(0, 100)).flag for _ in range(60)]
    assert not any(ordinary)
    assert d.update(25_000).flag

    config = TrackerConfig(scales=(1,), counts=CountSpikeConfig(min_count=3, warmup=8, halflife=24.0))
    events = []
    for b in range(14):
        n, negatives = (10_000, 1_000) if b < 13 else (10_000, 2_500)
        t0 = START + timedelta(minutes=15 * b)
        events += [
            ScoredEvent(f"{b}-{i}", t0 + timedelta(seconds=i * 0.08), i < negatives, 0.9 if i < negatives else 0.1)
            for i in range(n)
        ]
    alerts = run(events, config)
    opened = [a for a in alerts if a.key == "all" and a.status == "opened"]
    assert len(opened) == 1 and opened[0].window_start == START + timedelta(minutes=15 * 13)
    assert set(opened[0].kinds) & {"negative_volume", "negative_share"}


# --- detect series --------------------------------------------------------------------------------
def test_a_detect_series_episode_ends_after_the_daemons_two_quiet_hours() -> None:
    rng = random.Random(6)
    values = [rng.choice([3, 4, 5, 4, 3, 6]) for _ in range(12 * 24 * 4)]  # four days of 5-minute rows
    burst = 12 * 24 * 3
    for start in (burst, burst + 12, burst + 12 * 4):  # 1 hour after the first (one episode), 3 hours after (a new one)
        values[start : start + 2] = [60, 60]
    points = [Point(START + timedelta(minutes=5 * i), float(v), "") for i, v in enumerate(values)]
    assert [i for i, (_, _, flag) in enumerate(detect(points, 300.0)) if flag] == [burst, burst + 12 * 4]


def test_detect_series_learns_that_weekend_nights_are_busy() -> None:
    # Friday and Saturday nights three times the weekday rate, as a city's counts are. An hour-of-day
    # rhythm averages them with quiet weeknights and pages every weekend for ever; weekend hours
    # apart, they become the rhythm (a flagged row teaches at most 1.5 x its expectation, so it
    # takes some weeks), while a weekday burst still flags.
    rng = random.Random(8)
    monday = datetime(2024, 1, 1, tzinfo=timezone.utc)
    points = []
    for h in range(24 * 7 * 16):
        t = monday + timedelta(hours=h)
        busy = t.weekday() >= 5 and t.hour < 4
        points.append(Point(t, float(rng.randint(8, 12) * (3 if busy else 1)), ""))
    burst = 24 * 7 * 14 + 24 * 2 + 14  # a Wednesday afternoon in the fifteenth week
    points[burst] = Point(points[burst].timestamp, 60.0, "")
    flagged = [i for i, (_, _, flag) in enumerate(detect(points, 3600.0)) if flag]
    assert [i for i in flagged if i >= 24 * 7 * 10] == [burst]
    assert (
        slot_of(monday + timedelta(days=5, hours=1), 3600.0) == 25 and slot_of(monday + timedelta(hours=1), 3600.0) == 1
    )


def test_detect_series_keeps_missing_values_as_rows_without_evidence() -> None:
    rng = random.Random(7)
    values: list[float | None] = [float(rng.choice([3, 4, 5, 4, 3, 6])) for _ in range(24 * 10)]
    full = detect([Point(START + timedelta(hours=h), v, "") for h, v in enumerate(values)], 3600.0)
    values[100:103] = [None, None, None]
    gappy = detect([Point(START + timedelta(hours=h), v, "") for h, v in enumerate(values)], 3600.0)
    assert len(gappy) == len(full) and [(s, f) for _, s, f in gappy[100:103]] == [(0.0, False)] * 3
    assert sum(f for _, _, f in gappy) == 0


def test_detect_series_flags_one_row_per_episode_and_scores_every_row() -> None:
    rng = random.Random(5)
    values = [rng.choice([3, 4, 5, 4, 3, 6]) for _ in range(24 * 10)]
    for h in range(120, 126):
        values[h] = 40  # an episode of six hours: significant at every row
    for h in range(200, 202):
        values[h] = 45  # a second one, three days later
    points = [Point(START + timedelta(hours=h), float(v), "") for h, v in enumerate(values)]
    rows = detect(points, 3600.0)
    flagged = [i for i, (_, _, flag) in enumerate(rows) if flag]
    assert flagged == [120, 200]
    scores = [s for _, s, _ in rows]
    assert all(0.0 <= s <= 1.0 for s in scores) and min(scores[120:126]) > 0.5
    assert len({round(s, 3) for s in scores[30:]}) > 20  # continuous, not a 0/1 flag in disguise
    assert anomaly_score(1e-3, 1e-3) == 0.5 and anomaly_score(1.0, 1e-3) == 0.0
