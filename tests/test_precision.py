"""resources.precision: one choice per device, the same for every stage, refused where the device cannot honour it.

`choose_precision` is a pure function of (device type, compute capability, requested), so every GPU generation is
checked here without one; the CPU path then runs for real (labelling, training, evaluation refuse half precision
before any work and record what they computed in).
"""

from __future__ import annotations

import json

import pytest
import torch

from core.devices import PrecisionError, allows_tf32, autocast, choose_precision
from core.resources import ResourcesSpec
from jobs.spec import SpecError, parse_spec

V100, T4, A100, RTX_3090, H100 = (7, 0), (7, 5), (8, 0), (8, 6), (9, 0)


@pytest.mark.parametrize("device_type, capability, requested, chosen", [
    ("cpu", None, "auto", "fp32"),
    ("cpu", None, "fp32", "fp32"),
    ("cuda", V100, "auto", "fp16"),     # bf16 would be emulated: is_bf16_supported() says yes on a V100
    ("cuda", T4, "auto", "fp16"),
    ("cuda", A100, "auto", "bf16"),
    ("cuda", RTX_3090, "auto", "bf16"),
    ("cuda", H100, "auto", "bf16"),
    ("cuda", V100, "fp16", "fp16"),
    ("cuda", V100, "fp32", "fp32"),
    ("cuda", A100, "fp16", "fp16"),
    ("cuda", H100, "bf16", "bf16"),
    ("cuda", H100, "fp32", "fp32"),
])
def test_precision_for_each_device_and_request(device_type, capability, requested, chosen):
    assert choose_precision(device_type, capability, requested) == chosen


@pytest.mark.parametrize("device_type, capability, requested, tf32", [
    ("cpu", None, "auto", False),
    ("cuda", V100, "auto", False),      # no TF32 tensor cores before Ampere
    ("cuda", T4, "fp16", False),
    ("cuda", A100, "auto", True),
    ("cuda", RTX_3090, "fp16", True),
    ("cuda", H100, "bf16", True),
    ("cuda", H100, "fp32", False),      # fp32 by name stays IEEE fp32
])
def test_tf32_matmuls_on_ampere_and_newer_unless_fp32_is_asked_for(device_type, capability, requested, tf32):
    assert allows_tf32(device_type, capability, requested) is tf32


@pytest.mark.parametrize("device_type, capability, requested, reason", [
    ("cuda", V100, "bf16", "compute capability 8.0 or newer .* this one is 7.0"),
    ("cuda", T4, "bf16", "this one is 7.5"),
    ("cpu", None, "bf16", "on CPU"),
    ("cpu", None, "fp16", "on CPU"),
    ("cuda", A100, "fp8", "must be one of"),
])
def test_precisions_a_device_cannot_honour_are_refused_with_the_reason(device_type, capability, requested, reason):
    with pytest.raises(PrecisionError, match=reason):
        choose_precision(device_type, capability, requested)


def test_spec_takes_the_four_precisions_only(tmp_path):
    assert ResourcesSpec().precision == "auto"
    assert ResourcesSpec(precision="bf16").precision == "bf16"
    with pytest.raises(SpecError, match="resources.precision"):
        parse_spec({"resources": {"precision": "half"}}, tmp_path, "spec")


def test_fp32_runs_the_block_as_it_is_and_half_precision_under_autocast():
    weight = torch.randn(4, 4)
    with autocast(torch.device("cpu"), "fp32"):
        assert (weight @ weight).dtype == torch.float32
    with autocast(torch.device("cpu"), "bf16"):   # what a GPU gets; CPU autocast shows the dtype chosen
        assert (weight @ weight).dtype == torch.bfloat16


def test_label_stage_refuses_half_precision_on_cpu_before_any_work(tmp_path, ray_session, tiny_model_factory,
                                                                    squad_dev_path):
    from augment.readers import read_examples
    from augment.spec import DataSource
    from distill.label import label_examples
    from distill.models import ModelRef
    from distill.spec import FeaturesSpec, LabelSpec

    read_examples(DataSource(path=str(squad_dev_path), limit=4), "qa", None, tmp_path / "examples")
    teacher = ModelRef(str(tiny_model_factory("qa", layers=1, hidden=16)))
    with pytest.raises(PrecisionError, match="on CPU"):
        label_examples(tmp_path / "examples", "qa", [teacher], teacher, FeaturesSpec(max_seq_len=64, doc_stride=16,
                       max_query_len=16), LabelSpec(), ResourcesSpec(gpus_per_worker=0, cpus_per_worker=0.5,
                                                                    precision="fp16"),
                       tmp_path / "label", progress=False)
    assert not (tmp_path / "label" / "shards").exists()
    label_examples(tmp_path / "examples", "qa", [teacher], teacher, FeaturesSpec(max_seq_len=64, doc_stride=16,
                   max_query_len=16), LabelSpec(), ResourcesSpec(gpus_per_worker=0, cpus_per_worker=0.5),
                   tmp_path / "label", progress=False)
    assert json.loads((tmp_path / "label" / "label_config.json").read_text())["precision"] == "auto"
