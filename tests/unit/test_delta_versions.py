"""Small versions (issue 16, point 1): a version stores the tensors that differ from its base and
names the base by checksum; loads, refusals, pruning and the S3 registry with both kinds."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import pytest
import torch

from learners._delta import BASES
from learners.model import WEIGHTS_FILE, TextClassifier
from learners.registry import BaseRef, LocalRegistry, NewVersion, Registry, sha256
from streaming.errors import RegistryError

# the moto server and bucket fixtures of the S3 registry's unit tests (one module name per basename)
_spec = importlib.util.spec_from_file_location("_s3_fixtures_delta", Path(__file__).parent / "test_s3registry.py")
assert _spec is not None and _spec.loader is not None
_s3 = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_s3)
endpoint, bucket = _s3.endpoint, _s3.bucket

TEXTS = ["great service, thank you", "the worst delay ever", "it was fine, I guess"]


@pytest.fixture(autouse=True)
def _fresh_bases() -> Iterator[None]:
    """Each test starts as a new process would: no base loaded."""
    BASES.clear()
    yield
    BASES.clear()


@pytest.fixture(scope="module")
def encoder_model() -> TextClassifier:
    return TextClassifier.from_encoder(None, ["pos", "neg"], max_length=32)


def _train(model: TextClassifier, seed: int = 0) -> None:
    """What a learner changes by default: the top two layers, the head, the statistics head."""
    model.freeze_below(2)
    if model.stats_head is None:
        model.use_stats_head(model.encoder_depth() - 2, 1.0)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in [*model.parameters(), *model.stats_head.parameters()]:  # type: ignore[union-attr]
            if p.requires_grad or p.shape[0] == len(model.labels):
                p.add_(torch.randn(p.shape, generator=gen) * 0.05)


def _bootstrap(reg: Registry, model: TextClassifier) -> tuple[TextClassifier, str]:
    """Version 1, full (the start-up version), and the learner's own copy of it."""
    first = reg.create(model.save, NewVersion(status="promoted"))
    assert first.base is None
    learner = TextClassifier.load(reg.local_path(first.version))
    return learner, first.files[WEIGHTS_FILE]


def _same(a: TextClassifier, b: TextClassifier) -> None:
    pa, pb = a.predict(TEXTS), b.predict(TEXTS)
    assert [p.label for p in pa] == [p.label for p in pb]
    assert all(abs(x.scores[k] - y.scores[k]) < 1e-6 for x, y in zip(pa, pb) for k in x.scores)


def test_a_delta_is_small_and_loads_to_the_full_models_predictions(tmp_path, encoder_model):
    reg = LocalRegistry(tmp_path)
    learner, base_sha = _bootstrap(reg, encoder_model)
    _train(learner)
    meta = reg.create(learner.save, NewVersion(parent=1))
    assert meta.base == BaseRef(version=1, sha256=base_sha)
    full = (reg.local_path(1) / WEIGHTS_FILE).stat().st_size
    delta = (reg.local_path(meta.version) / WEIGHTS_FILE).stat().st_size
    assert delta < full / 4  # two of six layers, the heads: not the embeddings nor four layers
    info = json.loads((reg.local_path(meta.version) / "classifier.json").read_text())
    assert info["base"] == {"sha256": base_sha}
    BASES.clear()  # another process: reads the base once, then the delta
    _same(reg.load_model(meta.version), learner)
    _same(TextClassifier.load(reg.local_path(meta.version)), learner)
    # a delta of a delta's model still names the full base, and only what differs from it
    again = TextClassifier.load(reg.local_path(meta.version))
    _train(again, seed=1)
    third = reg.create(again.save, NewVersion(parent=meta.version))
    assert third.base == BaseRef(version=1, sha256=base_sha)
    _same(reg.load_model(third.version), again)


def test_served_models_share_the_base_and_the_learners_model_does_not(tmp_path, encoder_model):
    reg = LocalRegistry(tmp_path)
    learner, _ = _bootstrap(reg, encoder_model)
    _train(learner)
    reg.create(learner.save, NewVersion(parent=1))
    reg.create(learner.save, NewVersion(parent=2))
    before = BASES.loads  # the cache is the process's: other tests may have loaded bases before
    served_2, served_3 = reg.load_model(2), reg.load_model(3)
    frozen = "encoder.embeddings.word_embeddings.weight"
    ptr = {m.state_dict()[frozen].data_ptr() for m in (served_2, served_3, reg.load_model(1))}
    assert len(ptr) == 1  # once per process
    assert BASES.loads - before <= 1
    resumed = TextClassifier.load(reg.local_path(3))  # the learner's: its own tensors
    assert resumed.state_dict()[frozen].data_ptr() not in ptr
    with torch.no_grad():
        resumed.encoder.embeddings.word_embeddings.weight.add_(1.0)  # type: ignore[union-attr,operator]
    _same(served_2, served_3)
    assert torch.equal(served_2.state_dict()[frozen], reg.load_model(1).state_dict()[frozen])


def test_everything_trained_stays_a_full_version(tmp_path, encoder_model):
    reg = LocalRegistry(tmp_path)
    learner, _ = _bootstrap(reg, encoder_model)
    with torch.no_grad():
        for p in learner.parameters():
            p.add_(0.01)
    meta = reg.create(learner.save, NewVersion(parent=1))
    assert meta.base is None and "base" not in json.loads((reg.local_path(2) / "classifier.json").read_text())
    _same(reg.load_model(2), learner)


@pytest.fixture
def with_delta(tmp_path: Path, encoder_model: TextClassifier) -> tuple[LocalRegistry, str]:
    reg = LocalRegistry(tmp_path)
    learner, base_sha = _bootstrap(reg, encoder_model)
    _train(learner)
    reg.create(learner.save, NewVersion(parent=1))
    BASES.clear()
    return reg, base_sha


def test_a_missing_base_is_refused_loudly(with_delta):
    reg, base_sha = with_delta
    (reg.local_path(1) / WEIGHTS_FILE).unlink()
    with pytest.raises(RegistryError, match=rf"version 2: its base \(version 1, sha256 {base_sha}\)") as err:
        reg.load_model(2)
    assert err.value.version == 2
    reg.update(1, pruned=True, files={})
    with pytest.raises(RegistryError, match=rf"version 2: its base .*{base_sha}.* missing"):
        reg.local_path(2)


def test_a_base_with_another_checksum_is_refused_loudly(with_delta, tmp_path):
    reg, base_sha = with_delta
    meta_file = tmp_path / "versions" / "000002" / "meta.json"
    stored = json.loads(meta_file.read_text())
    stored["base"]["sha256"] = "0" * 64
    meta_file.write_text(json.dumps(stored))
    with pytest.raises(RegistryError, match=rf"version 2: its base \(version 1, sha256 {'0' * 64}\) does not match"):
        reg.load_model(2)
    # a base file rewritten in place: its checksum refuses it
    stored["base"]["sha256"] = base_sha
    meta_file.write_text(json.dumps(stored))
    (reg.local_path(1) / WEIGHTS_FILE).write_bytes(b"not the base")
    with pytest.raises(RegistryError, match=r"version 2: its base .* cannot be read .*checksum"):
        reg.load_model(2)


def test_a_delta_loaded_without_its_base_is_refused(with_delta):
    reg, base_sha = with_delta
    folder = reg.local_path(2)  # makes the base known to this process
    BASES.clear()  # a process that never verified it
    with pytest.raises(RegistryError, match=f"base sha256 {base_sha} is not available"):
        TextClassifier.load(folder)


def test_prune_keeps_the_bases_of_retained_versions(tmp_path, encoder_model):
    reg = LocalRegistry(tmp_path)
    learner, _ = _bootstrap(reg, encoder_model)
    _train(learner)
    for parent in range(1, 5):
        reg.create(learner.save, NewVersion(parent=parent))
    assert reg.prune(2, set()) == [2, 3]  # version 1 is the base of 4 and 5
    assert [m.version for m in reg.versions() if not m.pruned] == [1, 4, 5]
    BASES.clear()
    _same(reg.load_model(5), learner)
    # once no retained version refers to it, the base goes like any version
    reg.create(lambda f: (f / WEIGHTS_FILE).write_bytes(b"full"), NewVersion(parent=5))
    reg.create(lambda f: (f / WEIGHTS_FILE).write_bytes(b"full"), NewVersion(parent=6))
    assert reg.prune(2, set()) == [1, 4, 5]


def test_a_base_that_is_no_version_is_refused_when_writing(tmp_path, encoder_model):
    source = LocalRegistry(tmp_path / "a")
    learner, _ = _bootstrap(source, encoder_model)
    _train(learner)
    other = LocalRegistry(tmp_path / "b")
    with pytest.raises(RegistryError, match=r"base .* is no retained full version"):
        other.create(learner.save, NewVersion())
    assert other.versions() == []


def test_s3_roundtrip_signed(bucket, encoder_model, tmp_path):
    """On S3, signed: a new machine (empty cache) loads the delta and its base, and a delta whose
    base reference was altered in the bucket is refused by the signature."""
    from learners.registry.s3 import S3Registry

    key = "s3k-P9oI8uY7tR6eW5qA4sD3fG2hJ1kL0zXcVbNm"
    make: Callable[[], S3Registry] = lambda: S3Registry(  # noqa: E731
        bucket, "reg", cache_dir=tmp_path / f"cache-{len(list(tmp_path.iterdir()))}", signing_key=key
    )
    writer = make()
    learner, base_sha = _bootstrap(writer, encoder_model)
    _train(learner)
    meta = writer.create(learner.save, NewVersion(parent=1))
    assert meta.base == BaseRef(version=1, sha256=base_sha)
    BASES.clear()
    reader = make()
    _same(reader.load_model(meta.version), learner)
    assert sha256(reader.local_path(1) / WEIGHTS_FILE) == base_sha
    s3 = boto3.client("s3")
    stored = json.loads(s3.get_object(Bucket=bucket, Key="reg/versions/000002/meta.json")["Body"].read())
    stored["base"]["version"] = 2
    s3.put_object(Bucket=bucket, Key="reg/versions/000002/meta.json", Body=json.dumps(stored).encode())
    with pytest.raises(RegistryError, match="version 2 has a wrong signature"):
        make().load_model(2)


def test_the_cache_of_bases_checks_what_it_reads_and_stays_bounded(tmp_path):
    from hashlib import sha256 as digest

    from safetensors.torch import save_file

    from learners._delta import BaseCache

    cache = BaseCache(size=1)
    shas = []
    for i in range(2):
        path = tmp_path / f"w{i}.safetensors"
        save_file({"x": torch.full((4,), float(i))}, str(path))
        shas.append(digest(path.read_bytes()).hexdigest())
        cache.locate(shas[-1], path)
    first = cache.get(shas[0])
    assert cache.get(shas[0]) is first and cache.loads == 1  # read once
    cache.get(shas[1])  # the least recently used one is forgotten, then read again when asked for
    assert cache.get(shas[0]) is not first and cache.loads == 3
    cache.locate("f" * 64, tmp_path / "w0.safetensors")
    with pytest.raises(RegistryError, match=f"base sha256 {'f' * 64}: w0.safetensors does not match"):
        cache.get("f" * 64)


def test_versions_of_one_base_name_their_frozen_layers_by_it(tmp_path, encoder_model):
    """The gate's frozen-layer cache (learners/frozen.py) keys a version loaded from the registry
    by its base's checksum when its weights file holds no frozen tensor: every candidate of a
    lineage, and each one's int8 copy (packed layers: unhashable), reuse the states of the gate
    texts; a version that changed a frozen layer is hashed, so it never reads another's states."""
    from learners.frozen import FrozenCache, frozen_fingerprint
    from learners.quantize import served_copy

    def train_top(model: TextClassifier, seed: int) -> None:  # the top layers and the heads only
        _train(model, seed)
        with torch.no_grad():  # (_train also moves the token-type embeddings: two rows, like the labels)
            emb = model.encoder.embeddings.token_type_embeddings.weight  # type: ignore[union-attr]
            emb.copy_(encoder_model.encoder.embeddings.token_type_embeddings.weight)  # type: ignore[union-attr]

    reg = LocalRegistry(tmp_path)
    learner, base_sha = _bootstrap(reg, encoder_model)
    train_top(learner, seed=1)
    v2 = reg.create(learner.save, NewVersion(parent=1)).version
    train_top(learner, seed=2)
    v3 = reg.create(learner.save, NewVersion(parent=v2)).version
    a, b = (TextClassifier.load(reg.local_path(v), share_base=True) for v in (v2, v3))
    depth = a.stats_layer
    assert frozen_fingerprint(a, depth) == frozen_fingerprint(b, depth) == f"fp32:{base_sha}:{depth}"
    qa, qb = served_copy(a, "int8"), served_copy(b, "int8")
    assert frozen_fingerprint(qa, depth) == frozen_fingerprint(qb, depth) == f"int8:{base_sha}:{depth}"
    cache = FrozenCache()
    for model in (qa, qb):
        cached = cache.predict(model, TEXTS)
        assert [p.label for p in cached] == [p.label for p in model.predict(TEXTS)]
    assert cache.misses == len(TEXTS) and cache.hits == len(TEXTS)  # b's copy ran its top layers only
    with torch.no_grad():  # a frozen layer that changed: in the delta, so hashed
        learner.encoder.encoder.layer[0].output.dense.weight.mul_(1.01)  # type: ignore[union-attr]
    v4 = reg.create(learner.save, NewVersion(parent=v3)).version
    c = TextClassifier.load(reg.local_path(v4), share_base=True)
    assert ":" not in frozen_fingerprint(c, depth) and frozen_fingerprint(c, depth) != frozen_fingerprint(a, depth)
