"""Size and speed of a model: parameters, bytes of weights on disk, latency at batch 1, throughput at batch 32.

Timings use fixed-length synthetic inputs (every example padded to the same length, so that the numbers do not
depend on the data), `torch.inference_mode`, and the same precision as evaluation (`core.devices.choose_precision`: fp32
on CPU, bf16 on GPUs that have it natively, else fp16, unless resources.precision says otherwise). Each measurement runs `warmup` untimed passes (allocator, kernel selection, caches), then
`repeats` timed passes; the median is the headline number and the 90th percentile shows the slow tail.

Example::

    student = measure_model("runs/x/distill_prediction/student", seq_len=384, repeats=20, device="cpu")
    teacher = measure_model(ModelRef("deepset/bert-base-uncased-squad2"), seq_len=384, repeats=20, device="cpu")
    compare(student, teacher)  # {"speedup": 1.9, "size_ratio": 1.6, ...}
"""

from __future__ import annotations

import inspect
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from core.devices import autocast, device_precision
from core.positions import usable_positions
from core.tasks import Task
from distill import models
from distill.models import ModelRef
from distill.onnx_export import load_scoring_model


#: Batch size of the throughput measurement.
THROUGHPUT_BATCH_SIZE = 32
#: Untimed passes before the timed ones.
DEFAULT_WARMUP = 3
# Synthetic token ids are drawn from above this id: BERT-style vocabularies keep special and unused tokens low.
_FIRST_ORDINARY_ID = 1000


class SpeedError(ValueError):
    """A measurement that cannot be made or two reports that cannot be compared."""


@dataclass(frozen=True)
class SpeedReport:
    """Size and speed of one model on one device.

    Attributes:
        model: the folder or hub name measured.
        device: "cpu" or "cuda".
        device_name: the GPU's name, or "cpu" with the number of torch threads.
        precision: "fp32", "bf16" or "fp16" (what `core.devices.choose_precision` chose for the device).
        parameters: number of parameters (shared tensors counted once).
        size_bytes: bytes of weight files on disk (safetensors preferred over .bin when a folder holds both);
            None when the weights are not on local disk (a model built from its config alone).
        seq_len: tokens per synthetic example: the seq_len asked for, capped at the model's position embeddings.
        repeats: timed passes per measurement.
        warmup: untimed passes before them.
        latency_ms: median time of one example at batch 1, in milliseconds.
        latency_p90_ms: 90th percentile of the same.
        throughput_batch_size: examples per pass of the throughput measurement.
        throughput: examples per second at `throughput_batch_size`, from the median pass time.
        throughput_p90: examples per second from the 90th-percentile (slow) pass time.
    """

    model: str
    device: str
    device_name: str
    precision: str
    parameters: int
    size_bytes: int | None
    seq_len: int
    repeats: int
    warmup: int
    latency_ms: float
    latency_p90_ms: float
    throughput_batch_size: int
    throughput: float
    throughput_p90: float


def weights_size_bytes(folder: str | Path) -> int | None:
    """Sum of the weight files in a model folder, or None when it holds none.

    Safetensors files are counted when present, else `pytorch_model*.bin`; a hub repository that ships both
    formats would otherwise count twice. Tokenizer, config and training files are not weights.
    """
    folder = Path(folder)
    for pattern in ("*.safetensors", "pytorch_model*.bin"):
        files = sorted(folder.glob(pattern))
        if files:
            return sum(path.stat().st_size for path in files)
    return None


def _local_folder(ref: ModelRef) -> Path | None:
    """The folder holding the model's files: the path itself, or the hub cache's snapshot; None if neither."""
    path = Path(ref.name_or_path)
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download

    try:
        # Only looks in the local cache: the model was loaded from there, so this never downloads.
        return Path(snapshot_download(ref.name_or_path, local_files_only=True))
    except (OSError, ValueError):  # not cached, or not a valid repo id: the size is reported as unknown (None)
        return None


def _synthetic_batch(model: torch.nn.Module, vocab_size: int, batch_size: int, seq_len: int,
                     device: torch.device) -> dict[str, torch.Tensor]:
    """Fixed random inputs, all positions real (no padding): input_ids (B, T), attention_mask (B, T) and, when
    the model takes them, token_type_ids (B, T) split half question (0), half context (1)."""
    generator = torch.Generator().manual_seed(0)
    low = _FIRST_ORDINARY_ID if vocab_size > 2 * _FIRST_ORDINARY_ID else 0
    batch = {
        "input_ids": torch.randint(low, vocab_size, (batch_size, seq_len), generator=generator),
        "attention_mask": torch.ones(batch_size, seq_len, dtype=torch.long),
    }
    if "token_type_ids" in inspect.signature(model.forward).parameters:
        token_types = torch.zeros(batch_size, seq_len, dtype=torch.long)
        token_types[:, seq_len // 2:] = 1
        batch["token_type_ids"] = token_types
    return {key: value.to(device) for key, value in batch.items()}


def _time_passes(model: torch.nn.Module, batch: dict[str, torch.Tensor], device: torch.device, precision: str,
                 warmup: int, repeats: int) -> list[float]:
    """Seconds per forward pass, for `repeats` passes after `warmup` untimed ones."""
    seconds = []
    with torch.inference_mode(), autocast(device, precision):
        for index in range(warmup + repeats):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            model(**batch)
            # CUDA kernels run asynchronously: wait for them, or we would time only the launches.
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if index >= warmup:
                seconds.append(time.perf_counter() - start)
    return seconds


def measure_model(model_dir_or_ref: str | Path | ModelRef, seq_len: int, repeats: int,
                  device: str | torch.device = "cpu", *, task: Task | None = None, warmup: int = DEFAULT_WARMUP,
                  batch_size: int = THROUGHPUT_BATCH_SIZE, precision: str = "auto") -> SpeedReport:
    """Measure one model's size, latency at batch 1 and throughput at `batch_size` on one device.

    Args:
        model_dir_or_ref: a model folder, a hub name, an `.onnx` graph (`distill.onnx_export`), or a ModelRef
            (`init="random"` builds it from its config).
        seq_len: tokens per synthetic example, usually `features.max_seq_len`; capped at the model's positions.
        repeats: timed passes per measurement (the median is reported).
        device: "cpu", "cuda" or a torch.device.
        task: "qa" or "classification"; read from the config's architectures when None.
        warmup: untimed passes before the timed ones.
        batch_size: examples per pass of the throughput measurement.
        precision: resources.precision, resolved for the device (`core.devices.choose_precision`).

    Raises:
        SpeedError: repeats, warmup or batch_size out of range, or CUDA asked for but absent.
        models.ModelCheckError: no task given and none in the config.
    """
    if repeats < 1 or warmup < 0 or batch_size < 1 or seq_len < 1:
        raise SpeedError(f"need repeats >= 1, warmup >= 0, batch_size >= 1, seq_len >= 1; got repeats={repeats}, "
                         f"warmup={warmup}, batch_size={batch_size}, seq_len={seq_len}")
    ref = model_dir_or_ref if isinstance(model_dir_or_ref, ModelRef) else ModelRef(str(model_dir_or_ref))
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SpeedError(f"{ref.name_or_path}: asked to measure on {device} but CUDA is not available")
    config = models.load_config(ref)
    task = task or models.task_of(config, ref.name_or_path)
    positions = usable_positions(config)
    seq_len = min(seq_len, positions) if positions else seq_len

    model = load_scoring_model(ref, task).to(device)
    parameters = model.num_parameters()  # tied tensors once
    if ref.name_or_path.endswith(".onnx"):
        size_bytes = Path(ref.name_or_path).stat().st_size
    else:
        folder = _local_folder(ref)
        size_bytes = weights_size_bytes(folder) if folder is not None else None

    vocab_size = config.vocab_size
    computed_in = device_precision(device, precision)
    single = _time_passes(model, _synthetic_batch(model, vocab_size, 1, seq_len, device), device, computed_in, warmup,
                          repeats)
    batched = _time_passes(model, _synthetic_batch(model, vocab_size, batch_size, seq_len, device), device,
                           computed_in, warmup, repeats)
    device_name = (torch.cuda.get_device_name(device) if device.type == "cuda"
                   else f"cpu ({torch.get_num_threads()} threads)")
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return SpeedReport(
        model=ref.name_or_path,
        device=device.type,
        device_name=device_name,
        precision=computed_in,
        parameters=parameters,
        size_bytes=size_bytes,
        seq_len=seq_len,
        repeats=repeats,
        warmup=warmup,
        latency_ms=1000.0 * statistics.median(single),
        latency_p90_ms=1000.0 * float(np.percentile(single, 90)),
        throughput_batch_size=batch_size,
        throughput=batch_size / statistics.median(batched),
        throughput_p90=batch_size / float(np.percentile(batched, 90)),
    )


def compare(student: SpeedReport, teacher: SpeedReport) -> dict[str, float | int | str | None]:
    """How much smaller and faster the student is than the teacher, from two reports on the same device.

    Returns:
        device, seq_len; speedup = teacher latency / student latency (batch 1); throughput_ratio = student
        throughput / teacher throughput; size_ratio = teacher bytes / student bytes (None when either size is
        unknown); parameter_ratio = teacher parameters / student parameters. Above 1 means the student wins.

    Raises:
        SpeedError: the reports come from different devices, sequence lengths or batch sizes.
    """
    for field in ("device", "seq_len", "throughput_batch_size"):
        if getattr(student, field) != getattr(teacher, field):
            raise SpeedError(f"cannot compare: the student was measured with {field}={getattr(student, field)!r} "
                             f"and the teacher with {field}={getattr(teacher, field)!r}; measure both alike")
    size_ratio = (teacher.size_bytes / student.size_bytes
                  if teacher.size_bytes is not None and student.size_bytes else None)
    return {
        "device": student.device,
        "seq_len": student.seq_len,
        "speedup": teacher.latency_ms / student.latency_ms,
        "throughput_ratio": student.throughput / teacher.throughput,
        "size_ratio": size_ratio,
        "parameter_ratio": teacher.parameters / student.parameters,
    }
