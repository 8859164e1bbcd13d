"""Dynamic int8 quantization for CPU inference (``--quantize int8``).

:func:`quantize_int8` returns a copy of a model in which every ``nn.Linear`` computes with int8
weights (one scale per output channel) and int8 activations quantized on the fly per batch
(``torch.ao.quantization.quantize_dynamic``; oneDNN's kernels on CPUs with int8 matrix
instructions (AMX or AVX-512 VNNI), PyTorch's default x86/fbgemm ones elsewhere, see
:func:`int8_engine`); embeddings, LayerNorms and
attention's softmax stay float32. Because activation scales are taken per batch, a sentence's
int8 result can depend (slightly) on the other sentences of its batch.

Small products run in float32 on the same int8-rounded weights (:class:`Int8Linear`): PyTorch's
dynamic int8 kernel costs ~50 us a call whatever its size (it builds oneDNN's primitive
descriptor and quantizes the activations each time), so below ~8M multiply-adds (e.g. fewer
than ~40 rows of a 256 -> 768 layer, a decoding step of a few sentences) a float32 product is
faster; without this, translating 1-16 sentences was 0.67-0.80x as fast as float32
(benchmarks/PROFILE.md). The price is memory: a layer under :data:`LARGE_MATRIX` weights keeps
a float32 copy of its rounded weights next to the packed int8 ones (larger ones always run in
int8 and keep no copy). Two attnkit details are handled so that the quantized
model keeps the seq2seq interface and the training-loss path:

* a packed attention projection (``MultiHeadAttention.in_proj``, (3D, D)) is also sliced, by the
  model, into query and key/value parts for encoder–decoder attention; each slice gets its own
  quantized Linear (``split_proj``);
* the Transformer's output projection is usually the tied embedding matrix, read through
  ``output_weight`` by the fused loss: the quantized model projects with a quantized copy
  (``output_projection``, used by ``decode``/``forward``) and keeps the float matrix, so
  ``output_weight`` and :class:`~attnkit.training.losses.Seq2SeqObjective` still work.
"""

from __future__ import annotations

import copy
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnkit.attention.multihead import MultiHeadAttention
from attnkit.hardware import cpu_flags
from attnkit.models.transformer import Transformer

__all__ = [
    "QUANTIZE_CHOICES",
    "SMALL_PRODUCT",
    "LARGE_MATRIX",
    "Int8Linear",
    "check_quantize",
    "int8_engine",
    "quantize_int8",
    "is_quantized",
]

#: Values of ``--quantize``.
QUANTIZE_CHOICES = ("int8",)

#: Multiply-adds (rows x in x out) below which :class:`Int8Linear` computes in float32: the
#: measured crossover on a 2-core AMX Xeon is 7-13M (256 -> 256 at ~200 rows, 256 -> 768 at
#: ~48, 768 -> 256 at ~55, 384 -> 1536 at ~12).
SMALL_PRODUCT = 8_000_000
#: Weights (in x out) from which int8 is used at any row count: reading a float32 matrix of
#: 4 MiB costs more than the int8 call (a 256 -> 4,000 output layer at one row: 97 us float32,
#: 75 us int8).
LARGE_MATRIX = 2**20


class Int8Linear(nn.Module):
    """A dynamically quantized Linear that runs small products in float32.

    Args:
        quantized: a ``torch.ao`` dynamic quantized Linear (int8 weights per output channel).

    ``forward`` (..., in) -> (..., out): the int8 kernel when rows x in x out is at least
    :data:`SMALL_PRODUCT` or the matrix has :data:`LARGE_MATRIX` weights, else ``F.linear`` on
    the dequantized (int8-rounded) weights, so both paths use the same weights and only the
    activations' rounding differs.
    """

    def __init__(self, quantized: nn.Module) -> None:
        super().__init__()
        self.quantized = quantized
        weight, bias = quantized._weight_bias()  # (out, in) quantized per channel, (out,) float
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]
        self.always_int8 = self.in_features * self.out_features >= LARGE_MATRIX
        # The float32 copy only where the float32 path can run: a large matrix keeps int8 only.
        copy = None if self.always_int8 else weight.dequantize()  # (out, in)
        self.register_buffer("weight", copy, persistent=False)
        self.register_buffer("bias", None if bias is None else bias.detach().clone(), False)

    def forward(self, x: Tensor) -> Tensor:
        rows = x.numel() // self.in_features
        if not self.always_int8 and rows * self.in_features * self.out_features < SMALL_PRODUCT:
            return F.linear(x, self.weight, self.bias)
        return self.quantized(x)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"float32 below {SMALL_PRODUCT:,} multiply-adds"
        )


def check_quantize(quantize: str | None, device: str | torch.device = "cpu") -> None:
    """Validate ``--quantize`` (None = float32) for a device; one-line ValueError naming the fix."""
    if quantize is None:
        return
    if quantize not in QUANTIZE_CHOICES:
        raise ValueError(f"--quantize must be one of {QUANTIZE_CHOICES}, got {quantize!r}")
    if str(device) not in ("cpu", "auto") and torch.device(device).type != "cpu":
        raise ValueError(
            f"--quantize {quantize} runs on the CPU only (dynamic int8 kernels); use --device cpu"
        )


def is_quantized(model: nn.Module) -> bool:
    """Whether ``model`` came from :func:`quantize_int8`."""
    return getattr(model, "quantized", None) == "int8"


def _copy_linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    lin = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        lin.weight.copy_(weight)
        if bias is not None:
            lin.bias.copy_(bias)
    return lin


def int8_engine() -> str:
    """The quantized engine for :func:`quantize_int8`: ``onednn`` when PyTorch has it and the CPU
    has int8 matrix instructions (``amx_int8`` or ``avx512_vnni``: measured 1.38x float32 there
    against 1.21x for the default engine, greedy decoding of the fra-eng model,
    benchmarks/RESULTS.md), else PyTorch's current engine."""
    supported = torch.backends.quantized.supported_engines
    if "onednn" in supported and cpu_flags() & {"amx_int8", "avx512_vnni"}:
        return "onednn"
    return torch.backends.quantized.engine


def quantize_int8(model: nn.Module) -> nn.Module:
    """A dynamically int8-quantized copy of ``model`` for CPU inference (``model`` is unchanged).

    Args:
        model: any attnkit model (Transformer, Bahdanau, encoder, ViT) on the CPU.

    Returns:
        the quantized copy, in eval mode, with ``quantized = "int8"``.

    Sets ``torch.backends.quantized.engine`` to :func:`int8_engine` for the process (weights
    are packed for one engine and run with it).
    """
    if any(p.device.type != "cpu" for p in model.parameters()):
        raise ValueError("--quantize int8 runs on the CPU only; load the model with --device cpu")
    if is_quantized(model):
        return model
    model = copy.deepcopy(model).eval()
    for module in model.modules():
        if isinstance(module, MultiHeadAttention) and module.packed:
            d, w, b = module.d_model, module.in_proj.weight, module.in_proj.bias
            parts = {"q": (0, d), "kv": (d, 3 * d), "k": (d, 2 * d), "v": (2 * d, 3 * d)}
            module.split_proj = nn.ModuleDict(
                {
                    f"{lo}_{hi}": _copy_linear(w[lo:hi], None if b is None else b[lo:hi])
                    for lo, hi in parts.values()
                }
            )
    float_output = None
    if isinstance(model, Transformer):
        model.output_projection = _copy_linear(model.output_weight, None)  # (V, D)
        float_output, model.output = model.output, None  # the float matrix stays float
    torch.backends.quantized.engine = int8_engine()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's deprecation notices
        spec = {nn.Linear: torch.ao.quantization.per_channel_dynamic_qconfig}
        torch.ao.quantization.quantize_dynamic(model, spec, dtype=torch.qint8, inplace=True)
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, torch.ao.nn.quantized.dynamic.Linear):
                setattr(module, name, Int8Linear(child))
    if isinstance(model, Transformer):
        model.output = float_output
    model.quantized = "int8"
    return model
