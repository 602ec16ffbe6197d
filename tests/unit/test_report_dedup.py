"""The report's Dedup section from hand-made files: counts by kind, caption pairs from
duplicates/, SemDeDup's figures and the eps curve (log x, 1e-4 .. 0.2, the run's eps marked)."""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from beam_pipeline.report import write_report
from beam_pipeline.report.dedup import duplicate_examples, eps_marker
from beam_pipeline.report.funnel import funnel_steps

EPS_GRID = np.geomspace(1e-4, 0.2, 12)
CURVE = [[float(e), float(min(0.5, 0.02 + e * 2))] for e in EPS_GRID]
STATS = {
    "records_read": 1000,
    "records_accepted": 600,
    "records_rejected": 0,
    "rejected_by_reason": {},
    "files_rejected": 0,
    "records_deduplicated": 400,
    "deduplicated_by_kind": {"url": 250, "text": 100, "semantic": 50},
    "judged_by_kind": {"url": 1000, "text": 750, "semantic": 650},
    "semdedup": {
        "clusters": 8,
        "eps": 0.01,
        "keep": "hard",
        "largest_cluster": 190,
        "cluster_sizes": {"min": 20, "median": 80, "max": 190},
        "parts_split": 0,
        "centroids": "fitted",
        "iterations": 5,
        "eps_curve": CURVE,
    },
    "records_kept": 600,
    "balance": "none",
    "input_files": 2,
    "num_shards": 4,
    "accounting": {"read": 1000, "rejected": 0, "deduplicated": 400, "kept": 600},
}
PAIRS = [
    ("k1", "url", "k0", 1.0, "a red car", "a blue car"),
    ("k2", "text", "k9", 1.0, "A Cat", "a  cat"),
    ("k3", "semantic", "k4", 0.995, None, None),
    ("k5", "url", "k0", 1.0, "red <car>", "a blue car"),
]


def _output(tmp_path, stats=STATS):
    out = tmp_path / "out"
    (out / "duplicates").mkdir(parents=True)
    (out / "stats.json").write_text(json.dumps(stats))
    names = ["key", "kind", "duplicate_of", "similarity", "caption", "duplicate_of_caption"]
    table = pa.table({name: [row[i] for row in PAIRS] for i, name in enumerate(names)})
    pq.write_table(table, out / "duplicates" / "part-00000-of-00002.parquet")
    pq.write_table(table.slice(0, 0), out / "duplicates" / "part-00001-of-00002.parquet")
    return out


def test_dedup_section_counts_examples_semdedup_and_eps_curve(tmp_path):
    out = _output(tmp_path)
    write_report(str(out))
    page = (out / "report.html").read_text()
    section = page[page.index("<h2>Dedup</h2>") :]
    headings = [part.split("</h2>")[0] for part in page.split("<h2>")[1:]]
    assert headings.index("Dedup") == headings.index("Run figures") + 1  # the first stage's section
    for kind, judged, removed in (("url", "1,000", "250"), ("text", "750", "100"), ("semantic", "650", "50")):
        assert f"<td>{kind}</td><td class='n'>{judged}</td><td class='n'>{removed}</td>" in section
    assert "a red car</td><td>a blue car" in section and "red &lt;car&gt;" in section  # escaped
    assert "A Cat</td><td>a  cat" in section
    assert "largest cluster</td><td>190" in section and "min 20, median 80, max 190" in section
    assert 'alt="semdedup_eps.png"' in section
    image = Image.open(io.BytesIO((out / "plots" / "semdedup_eps.png").read_bytes()))
    assert image.format == "PNG" and image.size[0] > 400


def test_no_semdedup_no_curve(tmp_path):
    stats = {k: v for k, v in STATS.items() if k != "semdedup"}
    out = _output(tmp_path, stats)
    write_report(str(out))
    page = (out / "report.html").read_text()
    assert "<h2>Dedup</h2>" in page and "semdedup_eps" not in page and not (out / "plots" / "semdedup_eps.png").exists()


def test_examples_per_kind_are_the_first_rows(tmp_path):
    out = _output(tmp_path)
    found = duplicate_examples(str(out), ["url", "text", "semantic"], per_kind=1)
    assert found == {
        "url": [("a red car", "a blue car", "k1", "k0")],
        "text": [("A Cat", "a  cat", "k2", "k9")],
        "semantic": [(None, None, "k3", "k4")],
    }


def test_the_chosen_eps_is_marked_on_the_curve():
    eps, removed = eps_marker(CURVE, 0.01)
    assert eps == 0.01
    # between grid points: interpolated in log eps; at a grid point: that point's value
    assert min(r for e, r in CURVE if e <= 0.01) <= removed <= max(r for e, r in CURVE if e >= 0.01)
    assert eps_marker(CURVE, CURVE[3][0]) == (CURVE[3][0], CURVE[3][1])
    assert eps_marker(CURVE, None) is None


def test_the_funnel_shows_each_dedup_kind():
    steps = [(step.label, step.dropped, step.left) for step in funnel_steps(STATS)]
    assert steps[:5] == [
        ("read", 0, 1000),
        ("rejected (bad input)", 0, 1000),
        ("dedup: url", 250, 750),
        ("dedup: text", 100, 650),
        ("dedup: semantic", 50, 600),
    ]
