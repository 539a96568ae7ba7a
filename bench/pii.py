"""Cost of masking personal data (STREAMCL_PII=mask) per text; prints JSON.

Texts of about 200 characters, as a review or support-ticket stream sends them, in three
mixes: ``plain`` (words only: the masker's pre-check returns them untouched), ``numbers``
(words with an order number and a date, no personal data: every recogniser runs, none
finds anything) and ``pii`` (an e-mail address, a phone number, a card number and an IBAN
in each). Per mix: median and p95 microseconds per text and texts/s on one core; and the
import and construction time of a Masker (paid once, at start-up, only with masking on).

    python bench/pii.py [--texts 1000] [--seed 0] [--entities EMAIL_ADDRESS,...] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

WORDS_TEXT = (
    "the app crashed again after the update and my order did not arrive please refund it or send "
    "a new one soon thanks for the help with my account and the invoice great product five stars"
)
WORDS = WORDS_TEXT.split()


def _luhn(body: str) -> str:
    total = sum((d * 2 - 9 if d * 2 > 9 else d * 2) if i % 2 == 0 else d for i, d in enumerate(map(int, body[::-1])))
    return body + str((10 - total % 10) % 10)


def _iban(rng: random.Random) -> str:
    bban = "".join(rng.choice("0123456789") for _ in range(18))
    return f"DE{98 - int(bban + '131400') % 97:02d}{bban}"


def texts(mix: str, n: int, seed: int) -> list[str]:
    """``n`` texts of about 200 characters of ``mix`` (plain, numbers, pii)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        words = " ".join(rng.choice(WORDS) for _ in range(40))
        head, tail = words[:90], words[90:170]
        if mix == "plain":
            out.append(f"{head} {tail}")
        elif mix == "numbers":
            out.append(f"{head} order {rng.randint(10_000, 99_999)} of 2024-03-{rng.randint(10, 28)} {tail}")
        else:
            card = _luhn("4" + "".join(rng.choice("0123456789") for _ in range(14)))
            out.append(
                f"{head[:40]} mail user{i}@example.com call +1 415-{rng.randint(200, 999)}-{rng.randint(1000, 9999)} "
                f"{head[40:80]} card {card} iban {_iban(rng)} {tail[:40]}"
            )
    return out


def measure(masker: object, batch: list[str]) -> dict[str, float]:
    """Median and p95 microseconds per text, and texts/s over the batch."""
    mask = masker.mask  # type: ignore[attr-defined]
    for t in batch[:20]:
        mask(t)  # warm
    times = []
    started = time.perf_counter()
    for t in batch:
        t0 = time.perf_counter()
        mask(t)
        times.append((time.perf_counter() - t0) * 1e6)
    total = time.perf_counter() - started
    times.sort()
    return {
        "median_us": round(statistics.median(times), 1),
        "p95_us": round(times[int(0.95 * (len(times) - 1))], 1),
        "texts_per_s": round(len(batch) / total, 1),
        "mean_chars": round(statistics.mean(len(t) for t in batch), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--entities", default=None, help="comma-separated (default: every entity)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    t0 = time.perf_counter()
    from streaming.pii import ENTITIES, Masker

    entities = args.entities.split(",") if args.entities else ENTITIES
    masker = Masker(entities)
    built = time.perf_counter() - t0
    report = {
        "entities": list(masker.entities),
        "import_and_build_s": round(built, 2),
        **{mix: measure(masker, texts(mix, args.texts, args.seed)) for mix in ("plain", "numbers", "pii")},
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
