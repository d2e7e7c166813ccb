"""Where a worker computes and in what precision, decided in the worker itself, from its own device.

Every stage asks here: the masked LM, labelling, training and evaluation. Which workers get a GPU at all is
decided from the cluster's resources by `core.resources.resolve_resources`.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Iterator

import torch

if TYPE_CHECKING:
    from core.resources import ResourcesSpec


class DeviceError(RuntimeError):
    """A GPU asked for where this process has none."""


def needs_a_gpu_elsewhere(resources: ResourcesSpec) -> bool:
    """Whether the work asks for a GPU that this process does not have (a job's driver on a cluster's head node),
    so it must run on a Ray worker that has one."""
    return bool(resources.gpus_per_worker) and not torch.cuda.is_available()


def pick_device(gpus_per_worker: float | None) -> torch.device:
    """CUDA when asked for (or, when unset, when present); CPU otherwise."""
    want_gpu = torch.cuda.is_available() if gpus_per_worker is None else gpus_per_worker > 0
    if want_gpu and not torch.cuda.is_available():
        raise DeviceError("resources.gpus_per_worker > 0 but CUDA is not available on this machine")
    return torch.device("cuda" if want_gpu else "cpu")


#: What resources.precision may ask for; "auto" is resolved per device by `choose_precision`.
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
#: The first compute capability with native bf16 (Ampere, 8.0); torch emulates it below, without tensor cores.
NATIVE_BF16_CAPABILITY = (8, 0)


class PrecisionError(ValueError):
    """A precision the device cannot compute in well: bf16 on a GPU without it, half precision on CPU."""


def choose_precision(device_type: str, capability: tuple[int, int] | None, requested: str = "auto") -> str:
    """The precision ("fp32", "fp16" or "bf16") to compute in on a device; pure, so every case is testable anywhere.

    auto: bf16 on a GPU of compute capability 8.0 or newer (A100, H100, ...), fp16 with a loss scaler on older ones
    (a V100: `torch.cuda.is_bf16_supported()` says yes there, but emulates bf16 without tensor cores), fp32 on CPU
    (half precision on a CPU without native support is ~100x slower). An explicit choice is kept where the device
    computes it natively and refused with the reason where it does not.
    """
    if requested not in PRECISIONS:
        raise PrecisionError(f"resources.precision must be one of {', '.join(PRECISIONS)}, got {requested!r}")
    if device_type != "cuda":
        if requested in ("fp16", "bf16"):
            raise PrecisionError(f"resources.precision {requested} on CPU: training and inference there run in fp32 "
                                 "(half precision is emulated, about 100x slower); use auto or fp32")
        return "fp32"
    native_bf16 = capability is not None and tuple(capability) >= NATIVE_BF16_CAPABILITY
    if requested == "auto":
        return "bf16" if native_bf16 else "fp16"
    if requested == "bf16" and not native_bf16:
        major, minor = capability or (0, 0)
        raise PrecisionError(f"resources.precision bf16 needs a GPU of compute capability 8.0 or newer (Ampere); "
                             f"this one is {major}.{minor}, where bf16 is emulated without tensor cores; use fp16 "
                             "(or auto, which picks it)")
    return requested


def allows_tf32(device_type: str, capability: tuple[int, int] | None, requested: str = "auto") -> bool:
    """Whether fp32 matrix products may run on TF32 tensor cores: on Ampere or newer (8.0+), unless fp32 was asked
    for by name. Under autocast this reaches only the products autocast leaves in fp32 (the projections of phase 1's
    losses, for one); an explicit fp32 stays IEEE fp32 throughout, for runs compared bit for bit. (Convolutions,
    which these models have none of, use TF32 by torch's own default.)"""
    native = device_type == "cuda" and capability is not None and tuple(capability) >= NATIVE_BF16_CAPABILITY
    return native and requested != "fp32"


def device_precision(device: torch.device, requested: str = "auto") -> str:
    """`choose_precision` for a device of this process (its compute capability read here, where the work runs).

    The TF32 decision (`allows_tf32`) is applied here too, to this process's matmuls: it belongs with the
    precision, and every stage makes that choice once per worker through this function.
    """
    capability = torch.cuda.get_device_capability(device) if device.type == "cuda" else None
    precision = choose_precision(device.type, capability, requested)
    if device.type == "cuda":  # set both ways: an earlier stage in this process may have chosen otherwise
        torch.backends.cuda.matmul.fp32_precision = "tf32" if allows_tf32("cuda", capability, requested) else "ieee"
    return precision


#: Batches on a GPU are padded to a multiple of this many tokens. cuDNN's attention builds an execution plan for
#: every new sequence length and keeps it: measured on an H200, a new length cost 0.19 s in a BERT-base forward and
#: 0.5 s in a 6-layer training step, against 14 and 17 ms once the plan was built, so batches padded only to their
#: longest row (a new length every few steps) ran at a tenth of the speed. Few lengths, few plans.
GPU_LENGTH_MULTIPLE = 64


def padded_length(longest: int, device: torch.device, limit: int) -> int:
    """The length to pad a batch whose longest row has `longest` tokens to: on a GPU the next multiple of
    `GPU_LENGTH_MULTIPLE`, but never past `limit` (the longest row the data holds, so never past what the model
    takes); on CPU `longest` itself, where padding only costs time."""
    if device.type != "cuda":
        return longest
    return max(longest, min(-(-longest // GPU_LENGTH_MULTIPLE) * GPU_LENGTH_MULTIPLE, limit))


@contextlib.contextmanager
def autocast(device: torch.device, precision: str) -> Iterator[None]:
    """Run the block in `precision` (from `device_precision`): fp32 as it is, fp16/bf16 under torch.autocast."""
    if precision == "fp32":
        yield
        return
    with torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16):
        yield
