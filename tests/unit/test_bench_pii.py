"""``streamcl bench`` with ``STREAMCL_PII=mask``: every row's text is masked once before the
split, as the live service would learn it, and the result's settings say so (a fake runner)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from services.cli import main

_EMAIL, _CARD = "jo.smith{}@example.com", "4111 1111 1111 1111"


def texts_runner(strategy, stream, tests, domains, bounds, seed, eval_every, progress, desc) -> dict[str, Any]:
    """A stand-in for run_strategy: reports the texts it was given (train and test)."""
    seen = [r.text for r in stream] + [r.text for d in domains for r in tests[d]]
    return {"final_avg_accuracy": 0.5, "accuracy_matrix": [[0.5] * len(domains)] * len(domains), "texts": seen}


@pytest.fixture
def planted(tmp_path):
    path = tmp_path / "planted.jsonl"
    rows = [
        {"text": f"mail {_EMAIL.format(i)} card {_CARD} row {i}", "label": "xy"[i % 2], "domain": "ab"[i // 6]}
        for i in range(12)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _run(monkeypatch, tmp_path, data) -> dict[str, Any]:
    import learners.bench

    real = learners.bench.run_bench
    monkeypatch.setattr(learners.bench, "run_bench", lambda *a, **kw: real(*a, **kw, runner=texts_runner))
    out = tmp_path / "r.json"
    assert main(["bench", "--data", str(data), "--strategy", "naive", "--out", str(out)]) == 0
    return json.loads(out.read_text())


def test_bench_with_masking_learns_and_scores_masked_texts(monkeypatch, capsys, tmp_path, planted):
    monkeypatch.setenv("STREAMCL_PII", "mask")
    result = _run(monkeypatch, tmp_path, planted)
    assert result["settings"]["pii"] == "mask"
    texts = result["results"]["naive"]["texts"]
    assert len(texts) == 12
    assert all("<EMAIL_ADDRESS>" in t and "<CREDIT_CARD>" in t for t in texts)
    assert not any("@example.com" in t or _CARD in t for t in texts)
    assert sorted(int(t.rsplit(" ", 1)[1]) for t in texts) == list(range(12))  # the rest of the text is kept


def test_bench_without_masking_keeps_texts_as_sent(monkeypatch, capsys, tmp_path, planted):
    monkeypatch.setenv("STREAMCL_PII", "off")
    result = _run(monkeypatch, tmp_path, planted)
    assert result["settings"]["pii"] == "off"
    assert all(_CARD in t and "@example.com" in t for t in result["results"]["naive"]["texts"])
