"""Smoke test of `make bench-arrivals`: an hour of 12 images an hour under the hourly schedule and
with the model left on, through the same emulator; what a row measures and how it scales to a day."""

from __future__ import annotations

import json

from customlabels_batch.bench.arrivals import SMOKE, main, scenarios


def test_arrivals_smoke_measures_cost_per_day_and_time_to_result(tmp_path, capsys):
    output = tmp_path / "bench-arrivals.json"
    assert main(["--smoke", "--jobs", "1", "--output", str(output)]) == 0

    result = json.loads(output.read_text())
    rows = {row["policy"]: row for row in result["rows"]}
    hourly, always_on = rows["every hour"], rows["model left on all day"]
    for row in (hourly, always_on):
        assert row["images"] == 12
        assert row["imagesLost"] == 0
        assert row["imagesByOutcome"] == {"result": 12}
        assert (row["measuredHours"], row["scaledToDay"]) == (1.0, True)
    # Left on: every minute of the day, $96 at $4 an IU-hour, and results within seconds.
    assert always_on["iuMinutesPerDay"] == 1440.0
    assert always_on["usdPerDay"] == 96.0
    assert always_on["p95Minutes"] < 1
    # Hourly: one start an hour (24 a day) and a few RUNNING minutes each; a start bills 10 more
    # minutes if STARTING is billed; images wait for the next hour plus the start.
    assert hourly["modelStartsPerDay"] == 24
    assert 0 < hourly["iuMinutesPerDay"] < 24 * 5
    assert hourly["iuMinutesPerDayWithStarting"] == hourly["iuMinutesPerDay"] + 24 * 10
    assert hourly["modelFinalStatus"] == "STOPPED"
    assert 10 < hourly["p50Minutes"] < hourly["p95Minutes"] <= hourly["maxMinutes"] < 75
    printed = capsys.readouterr().out
    assert "1 h, x24 to a day" in printed
    assert "wall time" in printed


def test_every_window_is_a_whole_number_of_its_schedules_period():
    periods = {"every 15 min": 0.25, "every hour": 1.0, "every 4 hours": 4.0}
    for scenario in [*scenarios(full=True), *SMOKE]:
        if scenario.policy in periods:
            assert (scenario.hours / periods[scenario.policy]).is_integer(), scenario
    rows = {(s.rate, s.policy) for s in scenarios(full=True)}
    assert {(rate, policy) for rate in (12, 200, 5000) for policy in periods} <= rows
