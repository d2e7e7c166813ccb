"""ONNX copies of an exported student, fp32 and int8, for serving with onnxruntime.

`export_onnx` writes `<export>/onnx/`: `model.onnx` (fp32, traced by torch.export, batch and sequence length
dynamic), `model_int8.onnx` (the same with its weights dynamically quantized to int8, for CPUs) and the config and
tokenizer, so the folder serves on its own. It checks the fp32 graph against PyTorch on a padded batch of another
shape than the traced one and refuses a difference above `PARITY_TOLERANCE`.

`OnnxModel` runs either file behind the call signature of a transformers model, so evaluation (`distill.evaluate`)
scores it and `distill.speed` times it as it does the PyTorch student::

    files = export_onnx(Path("runs/<job>/export"))
    model = OnnxModel(files.int8)
    model(input_ids=ids, attention_mask=mask).start_logits  # (B, T) torch tensor
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from core.tasks import Task
from distill.models import ModelRef, check_task_head, load_config, load_model, load_tokenizer, task_of
from distill.tasks import task_kind

ONNX_DIR = "onnx"
FP32_FILE = "model.onnx"
INT8_FILE = "model_int8.onnx"
#: Largest |ONNX - PyTorch| logit difference accepted for the fp32 graph.
PARITY_TOLERANCE = 1e-3


class OnnxExportError(RuntimeError):
    """An ONNX graph that could not be written, or that disagrees with the PyTorch model."""


@dataclass(frozen=True)
class OnnxExport:
    """What `export_onnx` wrote.

    Attributes:
        folder: the ONNX folder (config, tokenizer and graphs).
        fp32: the fp32 graph.
        int8: the int8 graph, or None when not asked for.
        max_abs_diff: the largest |ONNX fp32 - PyTorch| logit on the parity batch.
    """

    folder: Path
    fp32: Path
    int8: Path | None
    max_abs_diff: float


def _sample_inputs(model: torch.nn.Module, vocab_size: int, batch: int, length: int,
                   pad_last: int = 0) -> dict[str, torch.Tensor]:
    """Random ids of ordinary tokens; the last row padded for its last `pad_last` positions."""
    generator = torch.Generator().manual_seed(batch * 1000 + length)
    inputs = {"input_ids": torch.randint(min(1000, vocab_size // 2), vocab_size, (batch, length), generator=generator),
              "attention_mask": torch.ones(batch, length, dtype=torch.long)}
    if pad_last:
        inputs["attention_mask"][-1, -pad_last:] = 0
    if "token_type_ids" in inspect.signature(model.forward).parameters:
        inputs["token_type_ids"] = torch.zeros(batch, length, dtype=torch.long)
        inputs["token_type_ids"][:, length // 2:] = 1
    return inputs


@contextlib.contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    """Only errors from `logger_name` and its children while the block runs."""
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def export_onnx(model_dir: Path, quantize: bool = True, out_dir: Path | None = None) -> OnnxExport:
    """Write `model_dir` (a student or export folder) as ONNX graphs into `out_dir` (default `model_dir/onnx`).

    Raises:
        OnnxExportError: the exporter failed, or the fp32 graph's logits differ from PyTorch's by more than
            PARITY_TOLERANCE.
        distill.models.ModelCheckError: the folder's head is neither QA nor classification.
    """
    import onnxruntime

    model_dir = Path(model_dir)
    out_dir = Path(out_dir) if out_dir is not None else model_dir / ONNX_DIR
    ref = ModelRef(str(model_dir))
    config = load_config(ref)
    task = task_of(config, str(model_dir))
    model = load_model(ref, task)
    tokenizer = load_tokenizer(ref)
    out_dir.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)

    traced = _sample_inputs(model, config.vocab_size, batch=2, length=16)
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    outputs = list(task_kind(task).output_names)
    fp32 = out_dir / FP32_FILE
    try:
        # the exporter's internals (deprecations, "torchvision is not installed"): nothing for a user to act on
        with warnings.catch_warnings(), _quiet("torch.onnx"):
            warnings.simplefilter("ignore", (UserWarning, FutureWarning))
            torch.onnx.export(model, (), str(fp32), kwargs=traced, input_names=list(traced), output_names=outputs,
                              dynamic_shapes={name: {0: batch, 1: sequence} for name in traced}, dynamo=True,
                              external_data=False, verbose=False)
    except Exception as err:  # the exporter raises many kinds; all mean the same to the user
        raise OnnxExportError(f"torch.onnx.export failed for {model_dir}: {err}") from err

    # a batch of another shape than the traced one, with padding, shows the axes really are dynamic
    check = _sample_inputs(model, config.vocab_size, batch=3, length=24, pad_last=5)
    with torch.inference_mode():
        expected = model(**check)
    session = onnxruntime.InferenceSession(str(fp32), providers=["CPUExecutionProvider"])
    got = session.run(outputs, {name: value.numpy() for name, value in check.items()})
    max_abs_diff = max(float(np.abs(getattr(expected, name).numpy() - value).max())
                       for name, value in zip(outputs, got))
    if max_abs_diff > PARITY_TOLERANCE:
        raise OnnxExportError(f"{fp32}: logits differ from PyTorch by up to {max_abs_diff:.2e} "
                              f"(> {PARITY_TOLERANCE:g}); the graph is not safe to serve")

    int8 = None
    if quantize:
        from onnxruntime.quantization import QuantType, quant_pre_process, quantize_dynamic

        int8 = out_dir / INT8_FILE
        prepared = out_dir / "model_prepared.onnx"  # shapes inferred and graph folded, as onnxruntime advises
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        quantize_dynamic(str(prepared), str(int8), weight_type=QuantType.QInt8)
        prepared.unlink()
    for path in out_dir.iterdir():
        path.chmod(0o644)
    return OnnxExport(folder=out_dir, fp32=fp32, int8=int8, max_abs_diff=max_abs_diff)


class OnnxModel:
    """An ONNX graph behind a transformers model's call: keyword tensors in, an object with `start_logits` and
    `end_logits` (QA) or `logits` (classification) out, as float32 CPU tensors.

    `config` is the folder's config (the tokenizer loads from the same folder); inputs the graph does not take
    (token_type_ids for DistilBERT-style models) are dropped; `to()` is accepted and ignored: onnxruntime runs
    on the CPU here.
    """

    def __init__(self, path: str | Path, threads: int | None = None):
        import onnxruntime

        self.path = Path(path)
        options = onnxruntime.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        self.input_names = [node.name for node in self.session.get_inputs()]
        self.output_names = [node.name for node in self.session.get_outputs()]
        self.config = load_config(ModelRef(str(self.path.parent)))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> SimpleNamespace:
        given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        feed = {name: given[name].cpu().numpy() for name in self.input_names}
        values = self.session.run(self.output_names, feed)
        return SimpleNamespace(**{name: torch.from_numpy(value) for name, value in zip(self.output_names, values)})

    __call__ = forward

    def to(self, device: torch.device | str) -> OnnxModel:
        return self

    def eval(self) -> OnnxModel:
        return self

    def num_parameters(self) -> int:
        import onnx

        graph = onnx.load(str(self.path), load_external_data=False).graph
        return sum(int(np.prod(tensor.dims)) for tensor in graph.initializer)


def load_scoring_model(ref: ModelRef, task: Task, num_labels: int | None = None) -> torch.nn.Module | OnnxModel:
    """What evaluation and speed measurement score: a path to an `.onnx` graph (`export_onnx`) as an `OnnxModel`,
    which they call like the PyTorch model, anything else as `models.load_model` gives it."""
    if not ref.name_or_path.endswith(".onnx"):
        return load_model(ref, task, num_labels)
    check_task_head(load_config(ref), task, num_labels, ref.name_or_path)
    return OnnxModel(ref.name_or_path)
