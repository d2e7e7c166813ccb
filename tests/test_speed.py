"""Size and speed measurement: report structure, sizes that grow with the model, and comparisons. No timed asserts."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from distill.models import ModelRef
from distill.speed import SpeedError, SpeedReport, compare, measure_model, weights_size_bytes


@pytest.fixture(scope="module")
def small_and_big(tiny_model_factory):
    small = tiny_model_factory(task="qa", layers=1, hidden=32, heads_count=2)
    big = tiny_model_factory(task="qa", layers=2, hidden=64, heads_count=2)
    return small, big


@pytest.fixture(scope="module")
def reports(small_and_big):
    small, big = small_and_big
    return (measure_model(small, seq_len=64, repeats=2, device="cpu", warmup=1, batch_size=4),
            measure_model(big, seq_len=64, repeats=2, device="cpu", warmup=1, batch_size=4))


def test_report_has_every_field_with_sane_values(reports):
    small, _ = reports
    assert isinstance(small, SpeedReport)
    assert small.device == "cpu" and small.precision == "fp32"
    assert small.seq_len == 64 and small.repeats == 2 and small.warmup == 1 and small.throughput_batch_size == 4
    for name in ("latency_ms", "latency_p90_ms", "throughput", "throughput_p90"):
        value = getattr(small, name)
        assert math.isfinite(value) and value > 0, name
    # the p90 pass is never faster than the median pass
    assert small.latency_p90_ms >= small.latency_ms and small.throughput_p90 <= small.throughput
    json.dumps(dataclasses.asdict(small))  # serialisable as is


def test_bigger_model_has_more_parameters_and_bytes(reports, small_and_big):
    small, big = reports
    assert big.parameters > small.parameters
    assert big.size_bytes > small.size_bytes > 0
    assert small.size_bytes == weights_size_bytes(small_and_big[0])


def test_seq_len_is_capped_at_the_model_positions(tiny_model_factory):
    folder = tiny_model_factory(task="classification", layers=1, hidden=32, max_positions=32)
    report = measure_model(folder, seq_len=384, repeats=1, device="cpu", warmup=0, batch_size=2)
    assert report.seq_len == 32


def test_model_built_from_config_has_no_size_on_disk(tmp_path, small_and_big):
    config_only = tmp_path / "config-only"
    config_only.mkdir()
    (config_only / "config.json").write_text((small_and_big[0] / "config.json").read_text())
    report = measure_model(ModelRef(str(config_only), init="random"), seq_len=16, repeats=1, device="cpu",
                           warmup=0, batch_size=2)
    assert report.size_bytes is None and report.parameters > 0


def test_compare_gives_ratios_above_one_for_a_smaller_student(reports):
    small, big = reports
    ratios = compare(small, big)
    assert ratios["size_ratio"] == pytest.approx(big.size_bytes / small.size_bytes)
    assert ratios["parameter_ratio"] > 1
    assert ratios["speedup"] == pytest.approx(big.latency_ms / small.latency_ms)
    assert set(ratios) == {"device", "seq_len", "speedup", "throughput_ratio", "size_ratio", "parameter_ratio"}


def test_compare_refuses_reports_measured_differently(reports):
    small, big = reports
    with pytest.raises(SpeedError, match="seq_len"):
        compare(small, dataclasses.replace(big, seq_len=128))


def test_bad_arguments_are_refused(small_and_big):
    with pytest.raises(SpeedError, match="repeats"):
        measure_model(small_and_big[0], seq_len=16, repeats=0, device="cpu")
