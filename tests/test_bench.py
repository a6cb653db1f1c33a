"""Smoke test of `make bench`: one tiny scenario under both policies, through the same emulator."""

from __future__ import annotations

import json

import pytest
from test_processor import processor_environment

from customlabels_batch.bench.__main__ import capacity_targets, main
from customlabels_batch.bench.adaptive import ATTEMPTS, adaptive_retries
from customlabels_batch.emulator.functions import PROCESSOR, load_handler


def test_bench_smoke_scenario_reports_both_policies_and_checks_itself(tmp_path, capsys):
    output = tmp_path / "bench-results.json"
    assert main(["--smoke", "--jobs", "1", "--output", str(output)]) == 0

    result = json.loads(output.read_text())
    runs = {run["policy"]: run for run in result["runs"]}
    assert set(runs) == {"pipeline", "reference"}
    ours, reference = runs["pipeline"], runs["reference"]
    assert ours["images"] == reference["images"] == 3
    assert ours["imagesLost"] == reference["imagesLost"] == 0
    assert ours["imagesByOutcome"] == {"result": 3}
    assert ours["modelFinalStatus"] == "STOPPED"
    # 3 images need 0.6 s of model time; the pipeline bills about a minute, the reference an hour.
    assert ours["minimumModelMinutes"] == 0.01
    assert 0 < ours["billedModelMinutes"] <= 3
    assert reference["billedModelMinutes"] >= 15 * ours["billedModelMinutes"]
    assert result["timeScaleCheck"]["ok"] is True
    printed = capsys.readouterr().out
    assert "3 images, start 5 min" in printed
    assert "[ok] time-scale check" in printed


def test_next_run_bench_runs_the_batch_twice_in_one_emulation_and_prints_each_record(capsys):
    from customlabels_batch.bench.next_run import main as next_run

    assert next_run(["--tps", "5", "--latency", "0.1", "--images", "3"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("run ")]
    assert [line.split(":")[0] for line in lines] == ["run 1", "run 2"]
    assert all(
        "SUCCEEDED, 8 environments per unit (8 per unit: no run has measured" in line for line in lines
    )
    # Three images fill no whole minute: the busiest minute's rate, said to be a lower bound.
    assert all("a lower bound: no full minute" in line and "0 in the DLQ" in line for line in lines)


def test_scenario_filter_runs_only_the_named_scenarios_and_refuses_a_name_that_matches_none(tmp_path, capsys):
    output = tmp_path / "bench-results.json"
    assert (
        main(["--suite", "costs", "--scenario", "1 images, start 5", "--jobs", "1", "--output", str(output)])
        == 0
    )
    result = json.loads(output.read_text())
    assert [(run["scenario"], run["policy"]) for run in result["runs"]] == [
        ("1 images, start 5 min", "pipeline"),
        ("1 images, start 5 min", "reference"),
    ]
    assert result["command"].endswith("--scenario 1 images, start 5 --jobs 1 --output " + str(output))

    with pytest.raises(SystemExit) as refused:
        main(["--suite", "costs", "--scenario", "no such batch", "--output", str(output)])
    assert refused.value.code == 2
    assert "no scenario of the suite has 'no such batch'" in capsys.readouterr().err


def test_the_adaptive_variant_paces_with_botocore_s_limiter_and_holds_the_call_window_at_the_batch(
    monkeypatch,
):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    module = load_handler(PROCESSOR, "adaptive_variant", processor_environment())
    adaptive_retries(module)
    client = module.rekognition_client()
    assert client.meta.config.retries == {"mode": "adaptive", "total_max_attempts": ATTEMPTS}
    # botocore's limiter paces every DetectCustomLabels call of this environment's client.
    sending = client.meta.events._emitter._handlers.prefix_search(
        "before-send.rekognition.DetectCustomLabels"
    )
    assert "ClientRateLimiter" in [
        type(getattr(handler, "__self__", handler)).__name__ for handler in sending
    ]
    # Throttles no longer narrow the call window: it stays at the whole batch.
    for _ in range(20):
        module.window.throttled(started=module.time.monotonic() + 1)
    assert module.window.allowed() == module.MAX_CALLS_IN_FLIGHT


def _backlog_row(images: int, billed: float, minimum: float) -> dict:
    return {
        "scenario": f"{images} images, targetDrainMinutes=60, up to 8 units",
        "policy": "pipeline",
        "suite": "capacity",
        "images": images,
        "billedModelMinutes": billed,
        "minimumModelMinutes": minimum,
        "drainMinutes": 45.0,
        "mostUnitsInService": 8,
        "unitsChosen": {"why": "test"},
    }


def test_a_backlog_without_a_one_unit_run_is_held_to_5_percent_over_the_least_possible():
    # 100,000 images at one unit outlast the cost guard: any one-unit run bills at least the minimum.
    (drained, billed) = capacity_targets([_backlog_row(100000, 340.33, 333.33)])
    assert drained["met"] and billed["met"]
    assert "340.33 vs the least possible 333.33 IU-min" in billed["worst"] and "+2.1%" in billed["worst"]
    (_, over) = capacity_targets([_backlog_row(100000, 351.0, 333.33)])
    assert not over["met"]


def test_a_backlog_with_a_one_unit_run_of_its_size_is_held_to_5_percent_of_that_run():
    one_unit = {
        "scenario": "20000 images, start 15 min",
        "policy": "pipeline",
        "suite": "costs",
        "images": 20000,
    }
    (_, billed) = capacity_targets(
        [_backlog_row(20000, 73.08, 66.67), one_unit | {"billedModelMinutes": 67.67}]
    )
    assert not billed["met"] and "73.08 vs 67.67 IU-min (+8.0%)" in billed["worst"]
