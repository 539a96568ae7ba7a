"""LoRA adapters: a frozen encoder, low-rank updates on the target layers, versions that serve
the merged updates, and a resume that goes on with the same adapters."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from learners.base import Example
from learners.lora import STATE_FILE, adapters_of, lora_targets
from learners.model import TextClassifier
from learners.settings import LearnerSettings
from learners.strategies import build_learner

WORDS = ["good", "bad", "great", "awful", "movie", "food", "service", "slow", "fast", "love", "hate"]


def batch(rng: random.Random, n: int = 8) -> list[Example]:
    out = []
    for i in range(n):
        label = rng.choice(["pos", "neg"])
        out.append(Example(" ".join(rng.choice(WORDS) for _ in range(8)) + f" {label}", label, "d", f"x{i}"))
    return out


def learner(strategy: str = "er-ace", **kw):
    settings = LearnerSettings(strategy=strategy, adapter="lora", max_length=24, **kw)
    model = TextClassifier.from_encoder(None, [], settings.max_length)
    return model, build_learner(settings, model)


def test_only_adapters_and_heads_train_and_the_encoder_is_untouched() -> None:
    model, lrn = learner()
    before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    assert not any(p.requires_grad for p in model.encoder.parameters())
    rng = random.Random(0)
    for _ in range(3):
        lrn.learn(batch(rng))
    after = model.encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the base weights stay
    adapters = adapters_of(model)
    assert adapters is not None and any(b.abs().sum() > 0 for b in adapters.b)  # the adapters learned
    assert len(adapters.names) == 4  # query and value of the top two layers


def test_the_saved_model_serves_the_merged_updates(tmp_path: Path) -> None:
    # fp32 frozen layers: the loaded fp32 model then computes exactly what the learner's does
    # (with the int8 default the int8-served copy does: tests/unit/test_quantize.py)
    model, lrn = learner(frozen_precision="fp32")
    rng = random.Random(1)
    for _ in range(3):
        lrn.learn(batch(rng))
    texts = [" ".join(WORDS[i : i + 5]) for i in range(5)]
    expected = model.predict(texts)
    adapters = adapters_of(model)
    assert adapters is not None
    with adapters.merged():
        model.save(tmp_path)
    served = TextClassifier.load(tmp_path)
    for a, b in zip(expected, served.predict(texts)):
        assert a.label == b.label
        for label in a.scores:
            assert b.scores[label] == pytest.approx(a.scores[label], abs=1e-4)
    # and the learner's model is back to its base weights with the hooks on
    assert [p.label for p in model.predict(texts)] == [p.label for p in expected]


def test_resume_goes_on_with_the_same_adapters(tmp_path: Path) -> None:
    model, lrn = learner(strategy="naive")
    rng = random.Random(2)
    for _ in range(2):
        lrn.learn(batch(rng))
    adapters = adapters_of(model)
    assert adapters is not None
    with adapters.merged():
        model.save(tmp_path)
    lrn.save_state(tmp_path)
    adapters.save(tmp_path)
    assert (tmp_path / STATE_FILE).is_file()
    loaded = TextClassifier.load(tmp_path)
    settings = LearnerSettings(strategy="naive", adapter="lora", max_length=24)
    again = build_learner(settings, loaded)
    again.load_state(tmp_path)
    resumed = adapters_of(loaded)
    assert resumed is not None and resumed.load(tmp_path)
    nxt = batch(random.Random(3))
    assert lrn.learn(nxt) == again.learn(nxt)
    for x, y in zip(adapters.b, resumed.b):
        assert torch.allclose(x, y, atol=1e-6)
    base = dict(model.encoder.named_parameters())
    for name, p in loaded.encoder.named_parameters():
        assert torch.allclose(p, base[name], atol=1e-6)  # the base weights again, not the merged ones


def test_unknown_target_is_refused_naming_the_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown LoRA targets.*valid: .*query"):
        learner(lora_targets=["qkv"])
    model = TextClassifier.from_encoder(None, [], 16)
    assert {"query", "key", "value", "dense"} <= set(lora_targets(model, 2))


def test_unknown_adapter_setting_fails_listing_the_valid_values() -> None:
    with pytest.raises(ValueError, match="'none' or 'lora'"):
        LearnerSettings(adapter="prefix")


def test_bench_runs_any_strategy_through_lora_and_refuses_unknown_ones() -> None:
    from learners.bench._run import check_strategies, learner_settings, resolve_strategy

    check_strategies(["default+lora", "naive+lora", "ewc"])
    with pytest.raises(ValueError, match="unknown strategy 'nope\\+lora'"):
        check_strategies(["nope+lora"])
    assert resolve_strategy("default+lora") == "er-ace+lora"
    settings = learner_settings("er-ace+lora", seed=1)
    assert settings.strategy == "er-ace" and settings.adapter == "lora"
    assert learner_settings("er-ace", seed=1).adapter == "none"
