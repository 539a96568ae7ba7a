"""The copy of a model that is served at a given precision (``STREAMCL_SERVE_PRECISION``).

``int8`` quantizes the encoder's linear layers dynamically (weights int8, activations
quantized per batch at run time: no calibration data needed), which makes a MiniLM-class
encoder faster on CPU for a small loss of accuracy. Each weight row (output channel) has its
own scale, in 7 bits, and activations use all 8 bits: torch's default (one scale per matrix,
activations in 7 bits) is off by about 25% of a frozen feature vector's length, this by 9%
(``news-headlines``, MiniLM's layer 4), which is worth 0.04 of final accuracy on short texts
(docs/strategies.md). 7-bit weights keep the sum of two unsigned 8-bit activations times
signed weights inside int16 (255 × 64 × 2 < 2¹⁵), so no CPU's int8 kernel saturates and every
machine computes the same answers. The head and the class-statistics head
stay fp32: they are a few thousand weights, quantizing them saves no time, and kept as plain
linear layers they can still grow new labels. Replicas serve this copy and the gate judges
the same copy, so a version whose int8 copy regresses is not promoted.
"""

from __future__ import annotations

import copy
import functools
import warnings
from typing import Literal, get_args

import torch
from torch import nn

from learners.model import TextClassifier, encoder_layers

Precision = Literal["fp32", "int8"]
PRECISIONS: tuple[str, ...] = get_args(Precision)


def served_copy(model: TextClassifier, precision: str) -> TextClassifier:
    """``model`` as served at ``precision``: the model itself for ``fp32``, a new classifier
    with a dynamically quantized encoder for ``int8``. ``model`` is left untouched; the copy
    shares its tensors that stay fp32 (embeddings, norms: with delta versions, the frozen base
    of every version), so it must not be trained."""
    if precision == "fp32":
        return model
    if precision != "int8":
        raise ValueError(f"unknown serving precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    served = TextClassifier(_quantized(model), model.tokenizer, model.labels, model.max_length)
    served.head = copy.deepcopy(model.head)
    if model.stats_head is not None:
        served.use_stats_head(model.stats_layer, model.stats_weight)  # hooks the copy's own layer
        served.stats_head = copy.deepcopy(model.stats_head)
    served.score_temperature = model.score_temperature
    # the same weights as ``model`` (packed): its frozen layers' outputs are named like its own
    served._base_sha, served._own_keys, served.precision = model._base_sha, model._own_keys, "int8"
    return served.eval()


def int8_frozen_layers(model: TextClassifier, trainable_layers: int) -> int:
    """Let ``model`` run its frozen bottom encoder layers (all but the top ``trainable_layers``;
    none with -1) as int8 copies (``STREAMCL_FROZEN_PRECISION=int8``): the learner's pass through
    them costs about 40% of a step in fp32. The copies are the very ones an int8-served copy
    computes (same weights, same quantization), so the class statistics gather the features the
    replicas serve with. The layers never train, so the copies never go stale; the saved weights
    stay fp32. Returns how many layers run int8."""
    if trainable_layers < 0:
        return 0
    layers = encoder_layers(model.encoder)
    frozen = range(max(0, len(layers) - trainable_layers))
    copies = {}
    for i in frozen:
        memo: dict[int, object] = {id(t): t for t in (*layers[i].parameters(), *layers[i].buffers())}
        copies[i] = _int8(copy.deepcopy(layers[i], memo))
    model.run_frozen_with(copies)
    if copies:
        model.precision = "int8"  # names its frozen layers' outputs apart from fp32 ones (learners/frozen.py)
    return len(copies)


def _int8(module: nn.Module) -> nn.Module:
    """``module`` with its linear layers replaced by dynamically quantized int8 ones (in place):
    weights per output channel in 7 bits, activations in 8 (see the module)."""
    with warnings.catch_warnings():  # torch.ao marks eager quantization deprecated; torch is pinned
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantized tensor creation functions")
        from torch.ao.quantization import QConfig, quantize_dynamic
        from torch.ao.quantization.observer import PerChannelMinMaxObserver, PlaceholderObserver

        qconfig = QConfig(
            activation=PlaceholderObserver.with_args(dtype=torch.quint8, quant_min=0, quant_max=255, is_dynamic=True),
            weight=PerChannelMinMaxObserver.with_args(
                dtype=torch.qint8, qscheme=torch.per_channel_symmetric, quant_min=-64, quant_max=63
            ),
        )
        return quantize_dynamic(
            module, {nn.Linear: qconfig}, dtype=torch.qint8, mapping={nn.Linear: _full_range_linear()}, inplace=True
        )


@functools.cache
def _full_range_linear() -> type[nn.Module]:
    """torch's dynamic int8 linear layer, quantizing its input over all 8 bits (torch's own
    keeps 7 for weights that may use all 8; ours use 7, see the module). Built on first use,
    under :func:`_int8`'s warning filters."""
    from torch.ao.nn.quantized.dynamic import Linear

    class FullRangeDynamicLinear(Linear):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = torch.ops.quantized.linear_dynamic(x, self._packed_params._packed_params, reduce_range=False)
            return y.to(x.dtype)

    return FullRangeDynamicLinear


def _quantized(model: TextClassifier) -> nn.Module:
    """A copy of ``model``'s encoder whose linear layers are int8: the module tree is copied,
    every tensor shared, then the linear modules of the copy are replaced."""
    encoder = model.encoder
    memo: dict[int, object] = {id(t): t for t in (*encoder.parameters(), *encoder.buffers())}
    memo[id(model)] = model  # the statistics hook is bound to ``model``: not copied, removed below
    clone = copy.deepcopy(encoder, memo)
    for module in clone.modules():
        for key, hook in list(module._forward_hooks.items()):
            if getattr(hook, "__self__", None) is model:
                del module._forward_hooks[key]
    return _int8(clone)


__all__ = ["PRECISIONS", "Precision", "int8_frozen_layers", "served_copy"]
