"""Outputs of the frozen bottom layers, computed once per text.

Versions of one lineage share their frozen bottom layers (only the top layers, the head and the
class statistics change), so scoring a candidate and the serving version on the same gate set
needs those layers once per text, not once per version and text. :class:`FrozenCache` keeps the
hidden states after the frozen layers, keyed by a fingerprint of those layers' weights (a model
whose bottom layers differ never reads another's states), and runs only the layers above them.
Encoders it cannot split (no BERT-style layer list and attention-mask builder) are scored whole.
"""

from __future__ import annotations

import hashlib
import logging
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from learners.model import Prediction, TextClassifier

log = logging.getLogger(__name__)

__all__ = ["FrozenCache", "frozen_fingerprint"]

_FINGERPRINTS: weakref.WeakKeyDictionary[Any, dict[int, str]] = weakref.WeakKeyDictionary()
#: Texts whose states a cache keeps (about 100 KB each at 64 tokens of a 384-wide encoder).
MAX_TEXTS = 4096


def frozen_fingerprint(model: TextClassifier, depth: int) -> str:
    """A checksum of the embeddings and the bottom ``depth`` encoder layers of ``model``
    (computed once per model object and depth: for models no one trains in place, as the gate's)."""
    memo = _FINGERPRINTS.setdefault(model, {})
    if depth not in memo:
        from learners.model import _encoder_layers

        modules = [_embeddings(model), *_encoder_layers(model.encoder)[:depth]]
        by_base = _base_fingerprint(model, modules, depth)
        if by_base is not None:
            memo[depth] = by_base
            return by_base
        items = [item for module in modules for item in module.state_dict().items()]
        if not all(isinstance(tensor, torch.Tensor) for _, tensor in items):
            # packed (quantized) weights: refused before anything is hashed
            raise TypeError("the frozen layers hold weights that are not plain tensors")
        digest = hashlib.sha1(usedforsecurity=False)
        for name, tensor in items:
            digest.update(name.encode())
            digest.update(tensor.detach().contiguous().cpu().numpy().tobytes())
        precision = getattr(model, "precision", "fp32")  # int8 stand-ins of the same weights: other states
        memo[depth] = digest.hexdigest() if precision == "fp32" else f"{precision}:{digest.hexdigest()}"
    return memo[depth]


def _base_fingerprint(model: TextClassifier, modules: list[Any], depth: int) -> str | None:
    """For a model loaded from a version (learners/_delta.py) whose weights file holds none of the
    frozen modules' tensors, those are its base's: the base's checksum, the depth and the
    precision name their outputs without reading a weight (a candidate's int8 copy, whose packed
    layers cannot be hashed, included). None: hash them."""
    base, own = getattr(model, "_base_sha", None), getattr(model, "_own_keys", None)
    if base is None or own is None:
        return None
    names = {id(module): name for name, module in model.named_modules()}
    prefixes = tuple(f"{names[id(m)]}." for m in modules if id(m) in names)
    if len(prefixes) != len(modules) or any(key.startswith(prefixes) for key in own):
        return None
    return f"{getattr(model, 'precision', 'fp32')}:{base}:{depth}"


def _embeddings(model: TextClassifier) -> Any:
    return model.encoder.embeddings  # type: ignore[union-attr]


class FrozenCache:
    """Hidden states after the frozen layers, per (fingerprint, text); :meth:`predict` runs a
    model's layers above them only."""

    def __init__(self, max_texts: int = MAX_TEXTS, batch: int = 64) -> None:
        self.max_texts = max_texts
        self.batch = batch
        self._states: OrderedDict[tuple[str, str], torch.Tensor] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def depth(self, model: TextClassifier) -> int:
        """The frozen layers of ``model``: those its class statistics read (they stay frozen); 0
        when it has none or cannot be split (then it is scored whole)."""
        encoder = getattr(model, "encoder", None)
        if getattr(model, "stats_head", None) is None or not hasattr(encoder, "_create_attention_masks"):
            return 0
        try:
            frozen_fingerprint(model, model.stats_layer)
        except (AttributeError, TypeError, RuntimeError) as exc:  # e.g. packed (quantized) weights
            log.debug("frozen layers of %s cannot be fingerprinted (%s): scored whole", type(model).__name__, exc)
            return 0
        return model.stats_layer

    @torch.inference_mode()
    def predict(self, model: TextClassifier, texts: Sequence[str]) -> list[Prediction]:
        """``model.predict(texts)``, reading the frozen layers' outputs from the cache."""
        depth = self.depth(model)
        out: list[Prediction] = []
        for i in range(0, len(texts), self.batch):
            chunk = list(texts[i : i + self.batch])
            if depth == 0:
                out += model.predict(chunk)
                continue
            hidden, mask = self._bottom(model, depth, chunk)
            logits = _top(model, depth, hidden, mask)
            out += model.decode(model.served_logits(logits) / model.score_temperature)
        return out

    def _bottom(self, model: TextClassifier, depth: int, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """The states after ``depth`` layers for ``texts`` (computed for the missing ones),
        padded into one batch with its attention mask."""
        fp = frozen_fingerprint(model, depth)
        missing = list(dict.fromkeys(t for t in texts if (fp, t) not in self._states))
        self.hits += len(texts) - len(missing)
        self.misses += len(missing)
        found = {t: self._states[(fp, t)] for t in texts if (fp, t) in self._states}
        found.update(zip(missing, _run_bottom(model, depth, missing)) if missing else ())
        for text in texts:  # the newest texts stay, the least recently scored go
            self._states[(fp, text)] = found[text]
            self._states.move_to_end((fp, text))
        while len(self._states) > self.max_texts:
            self._states.popitem(last=False)
        states = [found[t] for t in texts]
        width = max(s.shape[0] for s in states)
        hidden = states[0].new_zeros((len(states), width, states[0].shape[1]))
        mask = torch.zeros((len(states), width), dtype=torch.long)
        for row, state in enumerate(states):
            hidden[row, : state.shape[0]] = state
            mask[row, : state.shape[0]] = 1
        return hidden, mask


def _run_bottom(model: TextClassifier, depth: int, texts: list[str]) -> list[torch.Tensor]:
    """Each text's states after the embeddings and ``depth`` layers, without its padding."""
    from learners.model import _encoder_layers

    enc = model.tokenize(texts)
    hidden = _embeddings(model)(input_ids=enc["input_ids"])
    mask = _attention(model, enc["attention_mask"], hidden)
    stand_ins = getattr(model, "_frozen_stand_ins", {})  # the int8 copies a learner runs them as
    for i, layer in enumerate(_encoder_layers(model.encoder)[:depth]):
        hidden = _out(stand_ins.get(i, layer)(hidden, mask))
    lengths = enc["attention_mask"].sum(1).tolist()
    return [hidden[row, : int(n)].clone() for row, n in enumerate(lengths)]


def _top(model: TextClassifier, depth: int, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The head's logits from the states after ``depth`` layers (the states are also what the
    class statistics read: :meth:`TextClassifier.frozen_pooled`)."""
    from learners.model import _encoder_layers

    model._captured, model._mask = hidden, attention_mask
    mask = _attention(model, attention_mask, hidden)
    for layer in _encoder_layers(model.encoder)[depth:]:
        hidden = _out(layer(hidden, mask))
    weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)
    return model.head(pooled)


def _attention(model: TextClassifier, attention_mask: torch.Tensor, hidden: torch.Tensor) -> Any:
    """The attention mask in the form the encoder's layers take (the encoder's own builder)."""
    masks = model.encoder._create_attention_masks(  # type: ignore[operator,union-attr]
        attention_mask=attention_mask,
        encoder_attention_mask=None,
        embedding_output=hidden,
        encoder_hidden_states=None,
        past_key_values=None,
    )
    return masks[0]


def _out(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output
