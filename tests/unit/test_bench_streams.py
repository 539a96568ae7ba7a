"""bench/streams.py: the catalogue of unseen streams and the row builders that need no download."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "streamcl_bench_streams", Path(__file__).parents[2] / "bench" / "streams.py"
)
assert _spec is not None and _spec.loader is not None
streams = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = streams  # dataclasses look their module up while the class is built
_spec.loader.exec_module(streams)


def test_catalogue_names_are_unique_and_describe_labels_and_domains():
    names = [s.name for s in streams.STREAMS]
    assert len(names) == len(set(names))
    for s in streams.STREAMS:
        assert s.labels and len(set(s.labels)) == len(s.labels), s.name
        assert s.domains and len(set(s.domains)) == len(s.domains), s.name
        assert s.packages, s.name


def test_outlet_pair_keeps_two_outlets_and_merges_the_first_half_months(monkeypatch, tmp_path):
    rows = [
        {"text": f"article {i}", "label": label, "domain": domain, "ts": float(i)}
        for i, (label, domain) in enumerate(
            [
                ("abcnews", "to-02-14"),
                ("rte", "02-15..02-28"),
                ("bbc", "03-01..03-15"),
                ("rte", "03-01..03-15"),
                ("abcnews", "03-16..03-31"),
            ]
        )
    ]
    monkeypatch.setattr(streams, "news_outlets", lambda cache_dir: rows)
    pair = streams.outlet_pair(tmp_path)
    assert [(r["label"], r["domain"]) for r in pair] == [
        ("abcnews", "to-02-28"),
        ("rte", "to-02-28"),
        ("rte", "03-01..03-15"),
        ("abcnews", "03-16..03-31"),
    ]
    assert [r["ts"] for r in pair] == sorted(r["ts"] for r in pair)
    stream = next(s for s in streams.STREAMS if s.name == "outlet-pair")
    assert {r["domain"] for r in pair} == set(stream.domains)


def test_build_refuses_rows_that_do_not_match_the_catalogue(tmp_path):
    stream = next(s for s in streams.STREAMS if s.name == "outlet-pair")
    good = dataclasses.replace(
        stream,
        build=lambda cache: [
            {"text": "t", "label": lab, "domain": d, "ts": 0.0} for lab in stream.labels for d in stream.domains
        ],
    )
    path = streams.build(good, tmp_path)
    assert len(path.read_text().splitlines()) == len(stream.labels) * len(stream.domains)
    assert json.loads(path.read_text().splitlines()[0])["label"] in stream.labels
    bad = dataclasses.replace(
        stream, build=lambda cache: [{"text": "t", "label": "other", "domain": stream.domains[0], "ts": 0.0}]
    )
    with pytest.raises(SystemExit, match="differ"):
        streams.build(bad, tmp_path)
