"""Erasure by id: the texts of some example ids leave what the learner keeps.

A learner's state (replay memories, windows) and its held-out samples are JSON rows that start
with the example's text (``[text, label, ...]``); rows written since erasure exists end with the
example's id. :func:`forget_state` saves the learner's state to a scratch folder, finds the texts
of the ids there and in the held-out samples, takes out every row holding one of those texts,
and loads the state back, so it works for every strategy without knowing its files. The caller
then writes a version (without the texts) and :func:`erase_retained` drops the files that still
hold them, or a row of one of the ids (:func:`retained_texts`: an example a buffer has since
replaced is found by its id there), from the older retained versions (a dropped file leaves its version loadable: a
held-out sample or learner state that is missing starts empty). Lineage keeps the ids: the new
version lists them as ``erased``, and :func:`trained_in` says which versions trained on them.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
import threading
from collections.abc import Callable, Collection, Iterable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from learners.base import Learner
from learners.evaluation import HOLDOUT_FILE, Holdout
from learners.registry import LINEAGE_FILE, META_FILE, Registry, VersionMeta
from streaming.errors import RegistryError

log = logging.getLogger(__name__)

__all__ = [
    "ERASED",
    "ID_ROWS",
    "MAX_FORGET_IDS",
    "REFUSED",
    "Erasures",
    "check_ids",
    "erase_retained",
    "forget_state",
    "holds",
    "retained_texts",
    "scrub",
    "trained_in",
]

#: The lineage list of the ids erased since the parent version.
ERASED = "erased"
#: The lineage list of the erased ids read again (unread records, a replay) and refused.
REFUSED = "erased_refused"
#: Most ids one erasure request may name.
MAX_FORGET_IDS = 1000
#: Longest id (as for every event's id).
MAX_ID_CHARS = 256
_ID = re.compile(r"^[^\x00-\x1f\x7f]+$")


def check_ids(ids: Iterable[Any]) -> list[str]:
    """The ids of an erasure request, deduplicated in order; ValueError for an empty list, more
    than :data:`MAX_FORGET_IDS`, or an id that is not a string of 1 to 256 printable characters."""
    out = list(dict.fromkeys(ids))
    if not out:
        raise ValueError("'ids' must name at least one id")
    if len(out) > MAX_FORGET_IDS:
        raise ValueError(f"at most {MAX_FORGET_IDS} ids per request (got {len(out)})")
    for id_ in out:
        if not isinstance(id_, str) or not 0 < len(id_) <= MAX_ID_CHARS or not _ID.match(id_):
            raise ValueError(f"every id must be a string of 1 to {MAX_ID_CHARS} printable characters")
    return out


#: Lists of rows that end with the example's id, by the key that holds them: a strategy's window
#: (``[text, label, domain, id]``), a held-out sample's domains (``[text, label, id]``) and its
#: recent window (``[text, label, domain, id]``). Elsewhere only a replay memory's rows match by id.
ID_ROWS = {"window": 3, "samples": 2, "recent": 3}


def scrub(value: Any, ids: Collection[str], texts: set[str]) -> tuple[Any, set[str]]:
    """``value`` (parsed JSON) without its rows of ``ids`` or ``texts`` (a row: an array whose
    first item is a text; its id, when it has one, is its last item); returns it and the texts
    of the rows taken out."""
    found: set[str] = set()

    def walk(v: Any, at: int | None) -> Any:
        if isinstance(v, dict):
            return {k: walk(x, ID_ROWS.get(k) if at is None else at) for k, x in v.items()}
        if not isinstance(v, list):
            return v
        kept = []
        for item in v:
            if _row_of(item, ids, texts, at):
                found.add(item[0])
            else:
                kept.append(walk(item, None))
        return kept

    return walk(value, None), found


def _row_of(item: Any, ids: Collection[str], texts: set[str], at: int | None = None) -> bool:
    """A row of one of ``texts``, a replay memory's row (``[text, label, domain, logits, id]``,
    learners/memory.py) of one of ``ids``, or a row of one of ``ids`` in a list of
    :data:`ID_ROWS` (its id at ``at``)."""
    if not isinstance(item, list) or len(item) < 2 or not isinstance(item[0], str):
        return False
    if item[0] in texts:
        return True
    if at is not None and len(item) == at + 1 and isinstance(item[at], str) and item[at] in ids:
        return True
    return len(item) == 5 and (item[3] is None or isinstance(item[3], list)) and item[4] in ids


def _texts_of(states: Iterable[Any], ids: Collection[str], texts: set[str]) -> set[str]:
    """``texts`` with the texts of the rows of ``ids`` in ``states`` (parsed JSON) added."""
    for state in states:
        texts |= scrub(state, ids, texts)[1]
    return texts


def _scrub_folder(folder: Path, ids: Collection[str], texts: set[str]) -> set[str]:
    """Take the rows of ``ids``/``texts`` out of every JSON file in ``folder`` (two passes: the
    ids give texts, then every row of those texts goes); returns the texts found."""
    files = sorted(folder.glob("*.json"))
    states = {p: json.loads(p.read_text(encoding="utf-8")) for p in files}
    texts = _texts_of(states.values(), ids, texts)
    for path, state in states.items():
        cleaned, found = scrub(state, ids, texts)
        if found:
            path.write_text(json.dumps(cleaned, ensure_ascii=False), encoding="utf-8")
    return texts


def forget_state(learner: Learner, holdout: Holdout, ids: Collection[str], known: Iterable[str] = ()) -> set[str]:
    """Take the examples of ``ids`` (and every row of the ``known`` texts: those the ids have in
    older versions) out of ``learner``'s state and ``holdout``; returns the texts that were found
    (every copy of them is gone from both)."""
    wanted = set(ids)
    texts = set(holdout.forget(wanted)) | set(known)
    with tempfile.TemporaryDirectory(prefix="streamcl-erasure-") as tmp:
        folder = Path(tmp)
        learner.save_state(folder)
        texts = _scrub_folder(folder, wanted, texts)
        learner.load_state(folder)
    with tempfile.TemporaryDirectory(prefix="streamcl-erasure-") as tmp:
        folder = Path(tmp)
        holdout.save(folder)  # a sample of the same text under another id, or without one
        before = (folder / HOLDOUT_FILE).read_bytes()
        _scrub_folder(folder, (), texts)
        if (folder / HOLDOUT_FILE).read_bytes() != before:
            holdout.load(folder)
    return texts


def holds(path: Path, texts: Iterable[str]) -> bool:
    """Whether the file at ``path`` holds any of ``texts`` (as written, or escaped in JSON)."""
    raw = path.read_bytes()
    for text in texts:
        forms = {text, json.dumps(text, ensure_ascii=False)[1:-1], json.dumps(text)[1:-1]}
        if any(form.encode("utf-8") in raw for form in forms if form):
            return True
    return False


def _retained(registry: Registry, skip: int | None) -> Iterator[tuple[VersionMeta, Path, list[str]]]:
    """Every retained (unpruned) version but ``skip``, its folder and its JSON files that may
    hold a text (its metadata and lineage hold ids only); one that cannot be read is logged."""
    for meta in registry.versions():
        if meta.pruned or meta.version == skip:
            continue
        try:
            folder = registry.local_path(meta.version)
        except RegistryError as exc:
            log.error("erasure: version %d cannot be read to be checked: %s", meta.version, exc)
            continue
        yield meta, folder, [n for n in meta.files if n.endswith(".json") and n not in (META_FILE, LINEAGE_FILE)]


def retained_texts(registry: Registry, ids: Collection[str], skip: int | None = None) -> set[str]:
    """The texts the rows of ``ids`` have in the retained versions (but ``skip``): an example
    the live state no longer holds (a buffer replaced it) may still be in an older version."""
    texts: set[str] = set()
    if not ids:
        return texts
    for meta, folder, names in _retained(registry, skip):
        for name in names:
            try:
                state = json.loads((folder / name).read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:  # then only its texts decide (holds)
                log.error("erasure: %s of version %d is not JSON: %s", name, meta.version, exc)
                continue
            texts = _texts_of([state], ids, texts)
    return texts


def erase_retained(
    registry: Registry, texts: set[str], skip: int | None = None, ids: Collection[str] = ()
) -> dict[int, list[str]]:
    """Drop the files that hold one of ``texts``, or a row of one of ``ids`` (whose texts are
    added to ``texts``), from every retained (unpruned) version but ``skip`` (a learner state
    goes as a whole); returns the dropped files by version. A version whose files cannot be
    read is logged and left (its files fail their checksums anyway)."""
    dropped: dict[int, list[str]] = {}
    texts |= retained_texts(registry, ids, skip)  # the ids give texts, then the texts give files
    if not texts:
        return dropped
    for meta, folder, names in _retained(registry, skip):
        hit = {n for n in names if holds(folder / n, texts)}
        if hit & set(meta.state_files):
            hit |= {n for n in meta.state_files if n in meta.files}
        if hit:
            registry.drop_files(meta.version, sorted(hit))
            dropped[meta.version] = sorted(hit)
            log.warning("erasure: dropped %s from version %d", sorted(hit), meta.version)
    return dropped


def trained_in(registry: Registry, ids: Collection[str]) -> dict[str, Any]:
    """Which versions trained on (or held out) each of ``ids``, from every version's lineage:
    ``{"trained": {id: [versions]}, "held_out": {...}, "versions": [versions that trained on any]}``."""
    wanted = set(ids)
    out: dict[str, dict[str, list[int]]] = {"trained": {}, "held_out": {}}
    for meta in registry.versions():
        try:
            lineage = registry.lineage(meta.version) or {}
        except RegistryError as exc:
            log.error("erasure: the lineage of version %d cannot be read: %s", meta.version, exc)
            continue
        for kind, found in out.items():
            for id_ in wanted.intersection(lineage.get(kind, [])):
                found.setdefault(id_, []).append(meta.version)
    versions = sorted({v for vs in out["trained"].values() for v in vs})
    return {**out, "versions": versions}


class Erasures:
    """Erasure requests from other threads (a Ray actor's calls), applied by the service's own
    loop between steps, so they never race a batch or a version being written."""

    def __init__(self, timeout_s: float = 300.0) -> None:
        self.timeout_s = timeout_s
        self._waiting: list[tuple[list[str], Future[dict[str, Any]]]] = []
        self._lock = threading.Lock()

    def submit(self, ids: list[str]) -> dict[str, Any]:
        """Queue ``ids`` and wait for the loop's answer (TimeoutError after ``timeout_s``: the
        erasure still runs at the next step)."""
        done: Future[dict[str, Any]] = Future()
        with self._lock:
            self._waiting.append((check_ids(ids), done))
        return done.result(self.timeout_s)

    def run(self, erase: Callable[[list[str]], dict[str, Any]]) -> None:
        """Apply every queued request (from the service's loop); a failure is the caller's
        answer and the step's error (the service host counts and retries it)."""
        with self._lock:
            waiting, self._waiting = self._waiting, []
        for i, (ids, done) in enumerate(waiting):
            try:
                done.set_result(erase(ids))
            except BaseException as exc:
                done.set_exception(exc)
                with self._lock:  # the others wait for the next step
                    self._waiting[:0] = waiting[i + 1 :]
                raise
