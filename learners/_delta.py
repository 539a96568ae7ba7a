"""Small versions: the tensors of a model that differ from its base, and the process-wide cache
of bases.

A version's ``model.safetensors`` holds every tensor (a full version) or only those not
bit-identical to its base's (a delta); then ``classifier.json`` names the base by the sha256 of
its weights file. The full model is the base's tensors overlaid with the delta's. A process
loads each base once (:data:`BASES`, keyed by that checksum): models loaded for inference may
share its tensors; a model that trains gets copies.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING

from streaming.errors import RegistryError

if TYPE_CHECKING:  # torch loads only where tensors are compared or read (the registry imports this)
    import torch

__all__ = ["BASES", "BASE_KEY", "DELTA_SHARE", "BaseCache", "base_of_folder", "check_sha", "delta_of", "state_bytes"]

#: The key of ``classifier.json`` naming the base of a delta: ``{"sha256": …}``.
BASE_KEY = "base"
#: A delta is written only while its tensors are at most this share of the model's bytes (more:
#: nearly everything trains, e.g. ``STREAMCL_TRAINABLE_LAYERS=-1``, and a full version is simpler).
DELTA_SHARE = 0.5
_HEX = frozenset("0123456789abcdef")

State = dict[str, "torch.Tensor"]


def state_bytes(state: State) -> int:
    """The bytes the tensors of ``state`` take."""
    return sum(t.numel() * t.element_size() for t in state.values())


def delta_of(state: State, base: State) -> State | None:
    """The tensors of ``state`` that are not bit-identical to ``base``'s (new, reshaped, retyped or
    changed), or None when they are over :data:`DELTA_SHARE` of the model (save it whole)."""
    import torch

    out = {}
    for key, tensor in state.items():
        old = base.get(key)
        if old is None or old.dtype != tensor.dtype or old.shape != tensor.shape or not torch.equal(old, tensor):
            out[key] = tensor
    return out if state_bytes(out) <= DELTA_SHARE * state_bytes(state) else None


def check_sha(value: object, where: str) -> str:
    """A lowercase hex sha256, else RegistryError."""
    if not isinstance(value, str) or len(value) != 64 or not set(value) <= _HEX:
        raise RegistryError(f"{where}: refused base reference {str(value)[:80]!r}: not a sha256")
    return value


def base_of_folder(folder: Path) -> str | None:
    """The base checksum a saved model's ``classifier.json`` names (None: a full model, or no
    model in the folder); RegistryError for a reference that is not a checksum."""
    try:
        info = json.loads((folder / "classifier.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    ref = info.get(BASE_KEY) if isinstance(info, dict) else None
    if ref is None:
        return None
    return check_sha(ref.get("sha256") if isinstance(ref, dict) else ref, str(folder))


class BaseCache:
    """The bases this process has loaded (their tensors, by the sha256 of their weights file) and
    where the registry verified the ones not loaded yet. Bounded: the least recently used base is
    forgotten first (models that share its tensors keep them alive)."""

    def __init__(self, size: int = 2) -> None:
        self.size = size
        self._states: OrderedDict[str, State] = OrderedDict()
        self._paths: dict[str, Path] = {}
        self._lock = threading.Lock()
        self.loads = 0  # weights files read as bases (a test's and an operator's figure)

    def locate(self, sha: str, path: Path) -> None:
        """The weights file with checksum ``sha`` is at ``path`` (verified by the registry)."""
        with self._lock:
            self._paths[sha] = path

    def put(self, sha: str, state: State) -> State:
        """Keep ``state`` as the base ``sha`` (a full model just read); returns the cached state."""
        with self._lock:
            state = self._states.setdefault(sha, state)
            self._states.move_to_end(sha)
            while len(self._states) > self.size:
                self._states.popitem(last=False)
            return state

    def get(self, sha: str) -> State:
        """The base ``sha``'s tensors, read once per process from where the registry verified it;
        RegistryError when it is not known here or its file does not match ``sha``."""
        with self._lock:
            state = self._states.get(sha)
            if state is not None:
                self._states.move_to_end(sha)
                return state
            path = self._paths.get(sha)
        if path is None:
            raise RegistryError(f"base sha256 {sha} is not available (load the version through its registry)")
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise RegistryError(f"base sha256 {sha} is missing: {exc}") from None
        from safetensors.torch import load

        if hashlib.sha256(raw).hexdigest() != sha:
            raise RegistryError(f"base sha256 {sha}: {path.name} does not match its checksum: refused")
        self.loads += 1
        return self.put(sha, load(raw))

    def clear(self) -> None:
        with self._lock:
            self._states.clear()
            self._paths.clear()


#: The bases of this process.
BASES = BaseCache()
