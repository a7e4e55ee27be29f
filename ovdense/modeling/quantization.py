"""Dynamic int8 quantization of a module's linear layers, for CPU inference
(``precision="int8"`` of a :class:`~ovdense.modeling.segmentors.Segmentor`).

Dynamic quantization stores each ``nn.Linear`` weight in int8 (one scale per output channel)
and quantizes the activations on the fly (per row with torchao, per tensor with ``torch.ao``);
the matmuls run in int8 with int32 accumulation and the outputs come back in float32. Only the
weights are changed ahead of time, so no calibration data is needed.

Which layers: every module whose type is exactly ``nn.Linear`` — in a CLIP ViT the FFN's two
layers (``mlp.c_fc``, ``mlp.c_proj``), two thirds of a block's projection FLOPs. The attention
input projection (``in_proj_weight``, a bare parameter read by ``F.linear``) and the attention
output projection (``nn.MultiheadAttention.out_proj``, whose weight ``nn.MultiheadAttention``
reads directly) stay float32.

Backends (``backend=``):

* ``"torchao"``: ``torchao.quantization.quantize_`` with
  ``Int8DynamicActivationInt8WeightConfig`` (``pip install torchao``), the replacement PyTorch
  names for its eager-mode quantization;
* ``"torch.ao"``: ``torch.ao.quantization.quantize_dynamic`` with per-channel weights (fbgemm /
  x86 kernels). Deprecated since torch 2.8 (its warning names torchao as the replacement) but
  still shipped with torch 2.14; used when torchao is not installed;
* ``"auto"`` (default): torchao when importable, else ``torch.ao``.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterator

import torch
from torch import nn

__all__ = ["INT8_BACKENDS", "int8_backend", "quantize_int8", "quantized_linear_count"]

INT8_BACKENDS = ("auto", "torchao", "torch.ao")


def _has_torchao() -> bool:
    try:
        import torchao.quantization  # noqa: F401
    except ImportError:
        return False
    return True


def _has_torch_ao() -> bool:
    return hasattr(torch, "ao") and hasattr(torch.ao.quantization, "quantize_dynamic")


def int8_backend(backend: str = "auto") -> str:
    """The backend ``backend`` resolves to (``"torchao"`` or ``"torch.ao"``).

    Raises:
        ValueError: ``backend`` is not one of :data:`INT8_BACKENDS`.
        ImportError: The backend asked for (or both, for ``"auto"``) is not available.
    """
    if backend not in INT8_BACKENDS:
        raise ValueError(f"int8 backend: expected one of {INT8_BACKENDS}, got {backend!r}.")
    if backend in ("auto", "torchao") and _has_torchao():
        return "torchao"
    if backend in ("auto", "torch.ao") and _has_torch_ao():
        return "torch.ao"
    if backend == "torchao":
        raise ImportError("int8 with backend='torchao' needs torchao: pip install torchao")
    raise ImportError(
        "int8 quantization needs torchao (pip install torchao) or a torch that still ships "
        "torch.ao.quantization.quantize_dynamic."
    )


def _plain_linears(module: nn.Module) -> Iterator[tuple[str, nn.Linear]]:
    for name, m in module.named_modules():
        if type(m) is nn.Linear:
            yield name, m


def quantize_int8(
    module: nn.Module, backend: str = "auto", inplace: bool = False
) -> tuple[nn.Module, str]:
    """``module`` with its ``nn.Linear`` layers dynamically quantized to int8 (see the module
    docstring); CPU only, inference only.

    Args:
        module: any module on the CPU (its ``nn.Linear`` layers are replaced; the rest, e.g.
            attention input projections and convolutions, stays float32).
        backend: ``"auto"``, ``"torchao"`` or ``"torch.ao"``.
        inplace: quantize ``module`` itself; by default a deep copy is quantized and ``module``
            (which may share its layers with other models, e.g. a CLIP image tower) is left as
            it was.

    Returns:
        ``(quantized module in eval mode, backend used)``.

    Raises:
        ValueError: ``module`` has parameters off the CPU, or ``backend`` is unknown.
        ImportError: No int8 backend is available (install hint in the message).
    """
    used = int8_backend(backend)
    devices = {p.device.type for p in module.parameters()}
    if devices - {"cpu"}:
        raise ValueError(
            f"int8 dynamic quantization runs on the CPU only; the module is on {sorted(devices)}. "
            "Move it to the CPU, or use precision 'fp16' / 'bf16' on a GPU."
        )
    if not inplace:
        module = copy.deepcopy(module)
    module.eval()
    if used == "torchao":
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

        quantize_(
            module,
            Int8DynamicActivationInt8WeightConfig(),
            filter_fn=lambda m, fqn: type(m) is nn.Linear,
        )
        return module, used
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    with warnings.catch_warnings():
        # NOTE: torch 2.8+ warns that torch.ao.quantization moves to torchao (the "torchao"
        # backend here); the warning is stated once in the docs instead of at every call.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*")
        warnings.filterwarnings("ignore", message=".*quantize_per_channel.*")
        quantize_dynamic(
            module, {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8, inplace=True
        )
    return module, used


def quantized_linear_count(module: nn.Module) -> tuple[int, int]:
    """``(int8 linear layers, float linear layers)`` in ``module``, whichever backend made it
    (an ``nn.Linear`` whose weight is no longer a plain float tensor counts as int8)."""
    q = f = 0
    for m in module.modules():
        if "quantized.dynamic" in type(m).__module__ and type(m).__name__ == "Linear":
            q += 1  # torch.ao's DynamicQuantizedLinear
        elif isinstance(m, nn.Linear):
            w = m.weight
            if type(w) is not nn.Parameter and type(w) is not torch.Tensor:
                q += 1
            elif w.dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
                f += 1
    return q, f
