"""The labelled-series suite: the standard-profile score on hand-made flags, and the suite end to end
on small series written here (the real series are in the shared data folder, not in the tests)."""

from __future__ import annotations

import json
import math
import random
from datetime import datetime, timedelta, timezone

import pytest

from monitor.detection import labelled
from monitor.detection.labelled import scaled_sigmoid, score_flags
from monitor.errors import SeriesError

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
TIMES = [T0 + timedelta(hours=i) for i in range(1000)]
WINDOW = (TIMES[500], TIMES[519])  # rows 500..519, after the probation period (150 rows)


def flags_at(*rows: int) -> list[bool]:
    return [i in rows for i in range(len(TIMES))]


def test_never_flagging_scores_zero_and_a_flag_on_the_first_row_of_every_window_scores_100() -> None:
    assert score_flags(TIMES, flags_at(), [WINDOW]).score == 0.0
    perfect = score_flags(TIMES, flags_at(500), [WINDOW])
    assert perfect.score == pytest.approx(100.0)
    assert (perfect.found, perfect.flags, perfect.false_flags) == (1, 1, 0)


def test_a_later_detection_earns_less_and_only_the_first_in_a_window_counts() -> None:
    early = score_flags(TIMES, flags_at(502), [WINDOW]).score
    late = score_flags(TIMES, flags_at(517), [WINDOW]).score
    assert 90 < early < 100 and 0 < late < early
    assert score_flags(TIMES, flags_at(502, 510, 515), [WINDOW]).score == pytest.approx(early)


def test_false_flags_cost_a_tenth_of_a_window_and_less_just_after_one() -> None:
    alone = score_flags(TIMES, flags_at(200), [WINDOW])
    assert alone.raw == pytest.approx(-1.0 - 0.11)  # a missed window and a flag far from any
    after = score_flags(TIMES, flags_at(500, 522), [WINDOW])
    cost = after.raw - scaled_sigmoid(-1.0)
    assert -0.11 < cost < 0  # just past the window: cheaper than a flag far from it
    assert after.false_flags == 1


def test_flags_in_the_probation_period_are_not_counted() -> None:
    s = score_flags(TIMES, flags_at(10, 100), [WINDOW])
    assert (s.flags, s.raw) == (0, -1.0)


def test_the_scaled_sigmoid_runs_from_one_to_minus_one() -> None:
    assert scaled_sigmoid(-1.0) == pytest.approx(2 / (1 + math.exp(-5)) - 1)
    assert scaled_sigmoid(0.0) == 0.0 and scaled_sigmoid(10.0) == -1.0


def _write_series(path, values, start=T0, step=timedelta(minutes=30)) -> list[datetime]:
    path.parent.mkdir(parents=True, exist_ok=True)
    times = [start + i * step for i in range(len(values))]
    path.write_text(
        "timestamp,value\n" + "".join(f"{t:%Y-%m-%d %H:%M:%S},{v}\n" for t, v in zip(times, values)), encoding="utf-8"
    )
    return times


def test_the_suite_scores_detect_series_and_the_naive_rule_on_every_labelled_file(tmp_path) -> None:
    rng = random.Random(3)
    values = [max(0, round(rng.gauss(40 + 20 * math.sin(i * 2 * math.pi / 48), 6))) for i in range(48 * 30)]
    for i in range(48 * 20, 48 * 20 + 6):
        values[i] += 200  # a burst: three hours far above the daily rhythm
    times = _write_series(tmp_path / "real" / "counts.csv", values)
    _write_series(tmp_path / "real" / "unlabelled.csv", values)  # not in the windows file: not scored
    windows = {
        "real/counts.csv": [[f"{times[48 * 20 - 10]:%Y-%m-%d %H:%M:%S}", f"{times[48 * 20 + 20]:%Y-%m-%d %H:%M:%S}"]]
    }
    (tmp_path / "windows.json").write_text(json.dumps(windows), encoding="utf-8")
    rows = labelled.suite(labelled.load_folder(tmp_path, tmp_path / "windows.json"), labelled.candidates())
    assert list(rows)[0] == "default (detect series)" and "naive: 3-sigma of the previous day" in rows
    default = rows["default (detect series)"]
    assert list(default["series"]) == ["real/counts.csv"]
    assert default["pooled"]["found"] == 1 and default["pooled"]["score"] > 50
    assert "counts" in labelled.format_suite(rows)


def test_a_windows_file_that_names_nothing_there_is_a_clear_error(tmp_path) -> None:
    (tmp_path / "windows.json").write_text(json.dumps({"missing.csv": []}), encoding="utf-8")
    with pytest.raises(SeriesError, match="no series named"):
        labelled.load_folder(tmp_path, tmp_path / "windows.json")
    (tmp_path / "bad.json").write_text("[1, 2", encoding="utf-8")
    with pytest.raises(SeriesError, match="not a windows file"):
        labelled.read_windows(tmp_path / "bad.json")


def test_stocknet_volumes_are_hourly_counts_per_ticker_labelled_by_moves_either_way(tmp_path) -> None:
    from tests.test_detection_realdata import write_prices

    days = write_prices(tmp_path / "p.csv", {("AAA", 40): -0.10, ("BBB", 50): 0.12})
    day = days[40]
    rows = ["created_at,ticker,tweet_id,text,lang,is_retweet,file_date"]
    for i in range(24 * 30):  # a tweet about AAA every hour for 30 days, two about BBB a day
        t = datetime(day.year, day.month, day.day, tzinfo=timezone.utc) - timedelta(days=15) + timedelta(hours=i)
        rows.append(f"{t:%Y-%m-%dT%H:%M:%SZ},AAA,{i},$AAA news,en,false,{t:%Y-%m-%d}")
        if i % 12 == 0:
            rows.append(f"{t:%Y-%m-%dT%H:%M:%SZ},BBB,{i},$AAA news,en,false,{t:%Y-%m-%d}")  # filed under both
    rows.append(f"{day:%Y-%m-%d}T12:00:00Z,CCC,99999,$CCC once,en,false,{day:%Y-%m-%d}")  # under 1 a day: left out
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    series = labelled.stocknet_volumes(tmp_path / "t.csv", tmp_path / "p.csv")
    assert sorted(series) == ["stocknet/AAA", "stocknet/BBB"]
    points, windows = series["stocknet/AAA"]
    assert sum(p.value for p in points) == 24 * 30 and all(
        b.timestamp - a.timestamp == timedelta(hours=1) for a, b in zip(points, points[1:])
    )
    assert len(windows) == 1 and windows[0][0].date() == days[39]  # from the previous close
    assert sum(p.value for p in series["stocknet/BBB"][0]) == 60
    assert [w[1].date() for w in series["stocknet/BBB"][1]] == [
        days[51]
    ]  # a rise is a window too (ends at midnight NY)


def test_detect_evaluate_runs_the_series_suite_on_a_folder(tmp_path, capsys) -> None:
    from bearwatch.cli import main

    times = _write_series(tmp_path / "s" / "a.csv", [10 + (i % 7) for i in range(48 * 10)] + [300] + [10] * 20)
    window = [f"{times[48 * 10 - 2]:%Y-%m-%d %H:%M:%S}", f"{times[48 * 10 + 4]:%Y-%m-%d %H:%M:%S}"]
    (tmp_path / "s" / "windows.json").write_text(json.dumps({"a.csv": [window]}), encoding="utf-8")
    assert main(["detect", "evaluate", "--suite", "series", "--series", str(tmp_path / "s"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["s"]["default (detect series)"]["pooled"]["found"] == 1
    (tmp_path / "empty").mkdir()
    assert main(["detect", "evaluate", "--suite", "series", "--series", str(tmp_path / "empty")]) == 1
    assert "holds no CSV series" in capsys.readouterr().err


def test_series_labelled_row_by_row_get_nab_windows_centred_on_each_run_of_labels() -> None:
    points = [labelled.Point(t, 1.0, "") for t in TIMES]
    labels = [False] * 1000
    labels[300:302] = [True, True]  # one anomaly of two rows
    labels[700] = True  # and one of a single row
    windows = labelled.windows_from_labels(points, labels)
    # a tenth of 1,000 rows shared by two anomalies: 50 rows each, centred on the run
    assert windows == [(TIMES[276], TIMES[325]), (TIMES[675], TIMES[725])]
    labels[330] = True  # a third anomaly 28 rows after the first: their windows meet and merge
    assert len(labelled.windows_from_labels(points, labels)) == 2
    assert labelled.windows_from_labels(points, [False] * 1000) == []


def test_a_folder_of_series_labelled_row_by_row_is_read_whatever_the_header_case(tmp_path) -> None:
    rows = [
        f"{t:%Y-%m-%d %H:%M:%S},{'' if i == 40 else 5 + (i % 3)},{int(i in (600, 601))}" for i, t in enumerate(TIMES)
    ]
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.csv").write_text(
        '\ufeff"TimeStamp"," Value","Label"\n' + "\n".join(rows) + "\n", encoding="utf-8"
    )
    series = labelled.load_folder(tmp_path)
    points, windows = series["sub/a.csv"]
    assert len(points) == 1000 and points[40].value is None and points[41].value == 7.0
    assert len(windows) == 1 and windows[0][0] <= TIMES[600] <= windows[0][1]
    (tmp_path / "sub" / "a.csv").write_text("timestamp,value,label\n2024-01-01 00:00:00,3,yes\n", encoding="utf-8")
    with pytest.raises(SeriesError, match="label 'yes' is neither 0 nor 1"):
        labelled.load_folder(tmp_path)
    (tmp_path / "sub" / "a.csv").write_text("timestamp,value\n2024-01-01 00:00:00,3\n", encoding="utf-8")
    with pytest.raises(SeriesError, match="timestamp, value, label"):
        labelled.load_folder(tmp_path)


def test_a_value_that_is_no_count_is_a_clear_error_and_nan_is_a_gap(tmp_path) -> None:
    from monitor.detection.series import read_series

    path = tmp_path / "s.csv"
    for cell, message in (("inf", "finite"), ("-2", "not negative"), ("12 items", "not a number")):
        path.write_text(f"timestamp,value\n2024-01-01 00:00:00,{cell}\n", encoding="utf-8")
        with pytest.raises(SeriesError, match=message):
            read_series(path)
    path.write_text("timestamp,value\n2024-01-01 00:00:00,NaN\n2024-01-01 01:00:00,null\n", encoding="utf-8")
    assert [p.value for p in read_series(path)] == [None, None]
    path.write_bytes(b"timestamp,value\n2024-01-01 00:00:00,\xff\xfe\n")
    with pytest.raises(SeriesError, match="not UTF-8"):
        read_series(path)
