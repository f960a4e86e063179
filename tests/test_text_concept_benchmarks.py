"""benchmarks/ocr_cost.py and benchmarks/concept_quality.py run end to end in smoke mode and print their figures."""

from __future__ import annotations

import re

from tests.conftest import CALTECH, need_shared
from tests.test_benchmarks import run_benchmark


def test_ocr_cost_smoke_prints_cost_recall_top3_batch_and_lookup_figures():
    need_shared(CALTECH)
    out = run_benchmark("ocr_cost.py", "--smoke")
    cost = r"^(.+?)\s+3 photos\s+wall s/photo median ([\d.]+) mean ([\d.]+)\s+CPU s/photo ([\d.]+)"
    costs = re.findall(cost, out, re.M)
    assert [name.strip() for name, *_ in costs] == [
        "with rendered text (640 px)",
        "same photos, no text",
        "Caltech files as they are",
    ]
    assert all(float(v) > 0 for _, *values in costs for v in values)
    rates = re.findall(r"word recall ([\d.]+)\s+keyword top-3 rate ([\d.]+)", out)
    assert rates and all(0 <= float(v) <= 1 for pair in rates for v in pair)
    assert len(re.findall(r"^ocr_batch, [12] workers?\s+9 photos\s+[\d.]+ s.*CPU s/photo [\d.]+", out, re.M)) == 2
    assert len(re.findall(r"[\d.]+ ms per query", out)) == 8


def test_concept_quality_smoke_prints_both_concepts_and_every_text_query():
    from pixseek_data.shapes import COLOURS, UNNAMED_COLOURS, plain_queries

    out = run_benchmark("concept_quality.py", "--smoke")
    sections = re.split(r"^== (.+): \d+ pictures, \d+ relevant ==$", out, flags=re.M)[1:]
    assert [name for name in sections[::2]] == ["warm colours", "pink, a colour the model has no word for"]
    # Each concept's own phrasings besides the plain queries: 4 for warm colours, 3 for pink.
    expected_texts = [len(plain_queries()) + 4, len(plain_queries([*COLOURS, *UNNAMED_COLOURS])) + 3]
    for body, texts in zip(sections[1::2], expected_texts):
        rows = re.findall(
            r"^(concept, regularisation \S+|text \".+?\").*precision@20 mean ([\d.]+) worst ([\d.]+)\s+"
            r"AP mean ([\d.]+) worst ([\d.]+)",
            body,
            re.M,
        )
        assert sum(name.startswith("concept") for name, *_ in rows) == 5
        assert sum(name.startswith("text") for name, *_ in rows) == texts
        assert all(0 <= float(v) <= 1 for _, *values in rows for v in values)
        assert re.search(r'^best text query: ".+" \(precision@20 [\d.]+, AP [\d.]+\)$', body, re.M)
