#!/usr/bin/env python3
"""What reading text in photos costs on this CPU, how much of it is read, and keyword look-ups.

    python3 benchmarks/ocr_cost.py [--photos 40] [--docs 100000] [--smoke]

- Per photo, in this process (onnxruntime on every core): Caltech photos 640 px wide with one
  English and one Chinese word rendered on them (tests/text_photos.py), the same photos without
  text, and the original Caltech files (about 300 px wide). Wall and CPU seconds per photo, how
  many went past the cheap look (detection on a small copy) to the full pass, and how many came
  out with text.
- Word recall of the rendered words (English, Chinese), and the keyword top-3 rate: how often
  the keyword index (search/keywords.py) over the OCR text ranks a word's photo in its top 3.
- ocr_batch over all three sets with 1 worker of 2 threads and with 2 workers of 1 thread.
- The keyword index over DOCS synthetic documents: milliseconds per query (top 100) for terms
  of three or more characters (trigram table) and of two (short table), and for two-character
  terms by LIKE on the trigram table, the one-table alternative (a scan that stops at the 100th
  hit, so a term found nowhere costs the most).
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import statistics
import time
from pathlib import Path

import _common  # noqa: F401  (puts the repository on sys.path)
from _common import CALTECH, machine, temp_dir
from PIL import Image

from indexer.decode import decode_image
from indexer.library import keywords
from indexer.ocr import DECODE_SIDE, OcrJob, has_text, ocr_batch, ocr_one, read_text
from tests.text_photos import CHINESE, ENGLISH, cjk_font, plain_photo, render, source_photos


def per_photo(name: str, paths: list[Path]) -> dict[int, str]:
    walls, cpus, texts = [], [], {}
    for i, path in enumerate(paths):
        result = ocr_one(OcrJob(i, str(path)))
        walls.append(result.seconds)
        cpus.append(result.cpu_seconds)
        texts[i] = result.text
    # Apart from the timing: how many photos went past the cheap look to the full pass.
    looked = sum(has_text(decode_image(p, target_size=DECODE_SIDE).image) for p in paths)
    with_text = sum(bool(t) for t in texts.values())
    print(
        f"{name:<28} {len(paths):>4} photos   wall s/photo median {statistics.median(walls):.3f} "
        f"mean {statistics.mean(walls):.3f}   CPU s/photo {statistics.mean(cpus):.3f}   "
        f"past the cheap look {looked}   with text {with_text}"
    )
    return texts


def squashed(text: str) -> str:
    return "".join(text.split()).casefold()


def quality(photos, texts: dict[int, str]) -> None:
    conn = sqlite3.connect(":memory:")
    keywords.ensure_table(conn)
    keywords.upsert(conn, [(i, keywords.document(p.path, ocr_text=texts[i])) for i, p in enumerate(photos)])
    for language, is_lang in (("English", str.isascii), ("Chinese", lambda w: not w.isascii())):
        words = [(i, w) for i, p in enumerate(photos) for w in p.words if is_lang(w)]
        if not words:
            print(f"{language:<28} not rendered (no CJK font)")
            continue
        read = sum(squashed(w) in squashed(texts[i]) for i, w in words) / len(words)
        top3 = sum(i in [h for h, _ in keywords.keyword_search(conn, [w], limit=3)] for i, w in words) / len(words)
        print(f"{language:<28} {len(words):>4} words    word recall {read:.3f}   keyword top-3 rate {top3:.3f}")


def batch(paths: list[Path]) -> None:
    jobs = [OcrJob(i, str(p)) for i, p in enumerate(paths)]
    for workers in (1, 2):
        start = time.perf_counter()
        results = list(ocr_batch(jobs, workers=workers))
        wall = time.perf_counter() - start
        cpu = sum(r.cpu_seconds for r in results) / len(results)
        print(
            f"ocr_batch, {workers} worker{'s' * (workers > 1)}{'':<13} {len(results):>4} photos   {wall:.2f} s "
            f"({len(results) / wall:.2f} photos/s, worker start-up included)   workers' CPU s/photo {cpu:.3f}"
        )


def keyword_lookups(n_docs: int) -> None:
    rng = random.Random(0)
    vocabulary = list(ENGLISH) + ["total", "receipt", "street", "open", "sale", "menu", "price"]
    conn = sqlite3.connect(":memory:")
    keywords.ensure_table(conn)
    docs = []
    for i in range(n_docs):
        words = " ".join(rng.choice(vocabulary) for _ in range(rng.randint(0, 8)))
        chinese = "".join(rng.choice(CHINESE) for _ in range(rng.randint(0, 2)))
        docs.append((i + 1, keywords.KeywordDoc(ocr=f"{words} {chinese}".strip(), name=f"IMG {i:05d}")))
    start = time.perf_counter()
    keywords.upsert(conn, docs)
    conn.commit()
    print(f"keyword index, {n_docs} documents: built in {time.perf_counter() - start:.2f} s")
    like = f"SELECT rowid FROM {keywords.TABLE} WHERE ocr LIKE ? OR name LIKE ? LIMIT 100"
    lookups = [
        (f"{label} ({table})", lambda t=term: keywords.keyword_search(conn, [t], limit=100))
        for label, term, table in (
            ("common word", "coffee", "trigram"),
            ("word found nowhere", "mountain", "trigram"),
            ("3 Chinese characters", "火车站", "trigram"),
            ("2 Chinese characters", "北京", "short table"),
            ("2 characters found nowhere", "雪山", "short table"),
            ("2 digits", "42", "short table"),
        )
    ]
    # The one-table alternative: short terms by LIKE on the trigram table, a scan of every row.
    lookups += [
        (f"{label} (LIKE scan)", lambda t=term: conn.execute(like, [f"%{t}%"] * 2).fetchall())
        for label, term in (("2 Chinese characters", "北京"), ("2 characters found nowhere", "雪山"))
    ]
    for label, lookup in lookups:
        times = []
        for _ in range(5):
            start = time.perf_counter()
            hits = lookup()
            times.append(time.perf_counter() - start)
        print(f"  {label:<44} {statistics.median(times) * 1000:8.1f} ms per query (top {len(hits)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=40, help="photos per set")
    parser.add_argument("--docs", type=int, default=100_000, help="documents for the keyword look-ups")
    parser.add_argument("--smoke", action="store_true", help="3 photos per set, 2,000 documents")
    args = parser.parse_args()
    n, n_docs = (3, 2_000) if args.smoke else (args.photos, args.docs)
    if not CALTECH.is_dir():
        raise SystemExit(f"Caltech photos not found at {CALTECH}")
    print(f"machine: {machine()}; CJK font: {cjk_font() or 'none'}")
    with temp_dir("ocr") as tmp:
        folder = Path(tmp)
        sources = source_photos(CALTECH, n)
        photos = render(sources, folder / "text")
        (folder / "plain").mkdir()
        plain = [plain_photo(s, folder / "plain" / f"plain-{i:03d}.jpg") for i, s in enumerate(sources)]
        # Other photos for the originals, so that none is one the sets above were made from.
        originals = source_photos(CALTECH, n, offset=2)
        read_text(Image.new("RGB", (64, 64)))  # load the models before any timing
        texts = per_photo("with rendered text (640 px)", [p.path for p in photos])
        per_photo("same photos, no text", plain)
        per_photo("Caltech files as they are", originals)
        quality(photos, texts)
        batch([p.path for p in photos] + plain + originals)
    keyword_lookups(n_docs)


if __name__ == "__main__":
    main()
