"""What Browse shows of one adapter: lineage tables without local paths, the card's
images inlined by revision, revisions with aliases, two revisions' metrics."""

from __future__ import annotations

import math

import pytest
from rendered import rendered_html, shown
from space_standin import JOB_YAML, TRAINING

from loradock.spaces.browse import (
    code_block,
    inline_images,
    lineage_markdown,
    linked_files,
    redact_yaml_paths,
    revision_metrics,
    revisions_frame,
)
from loradock.spaces.client import AdapterCardView, AdapterRow

CARD = AdapterCardView(
    "o/d8",
    "# card",
    lineage={
        "base_model": "tiny/base",
        "base_revision": "r" * 40,
        "datasets": ["loradock/dates"],
        "training": TRAINING,
        "revisions": [
            {"sha": "s1", "metrics": {"dates/exact_match": 0.7, "general_mc/acc": 0.4}},
            {"sha": "s0", "metrics": {"dates/exact_match": 0.5}},
        ],
        "aliases": {"prod": "s1", "staging": "s0"},
    },
    sha="s1",
)
ROW = AdapterRow("o/d8", base_model="b", sha="s1", tasks=("dates",), aliases={"prod": "s1"})


def test_lineage_reads_as_tables_and_a_yaml_block():
    html = rendered_html(lineage_markdown(ROW, CARD))
    for phrase in (
        "<code>tiny/base</code> @ <code>rrrr",
        "<code>loradock/dates</code>",
        "<td>lora.r</td>\n<td><code>8</code></td>",  # nested settings as dotted keys
        "<td>learning_rate</td>\n<td><code>0.0002</code></td>",
        "<td>sha256</td>\n<td><code>" + "d" * 64,  # the data set's content hash
        "<td>peft</td>\n<td><code>0.13.2</code></td>",  # libraries
        '<code class="language-yaml">name: dates-r8',
    ):
        assert phrase in html, phrase
    text = shown(lineage_markdown(ROW, CARD))
    assert "/home/alice" not in text and "output_dir: (local path)" in text
    assert '{"name"' not in text  # no raw dict strings


@pytest.mark.parametrize(
    ("line", "redacted"),
    [
        ("output_dir: /home/alice/runs/x", "output_dir: (local path)"),
        ("  train: '~/data/train.jsonl'", "  train: (local path)"),
        ("cache: C:\\Users\\bob\\x", "cache: (local path)"),
        ("- path: /srv/data", "- path: (local path)"),
        ("name: loradock/dates", "name: loradock/dates"),  # a repo id is not a path
        ("url: https://example.org/x", "url: https://example.org/x"),
    ],
)
def test_local_paths_leave_the_job_yaml(line, redacted):
    assert redact_yaml_paths(line) == redacted


def test_a_code_block_cannot_be_closed_from_inside():
    block = code_block("a: 1\n```\n# heading\n````")
    html = rendered_html(block)
    assert html.count("<pre>") == 1 and "<h1>" not in html
    assert JOB_YAML.splitlines()[0] in rendered_html(code_block(JOB_YAML))


@pytest.mark.parametrize(
    ("markdown", "files"),
    [
        ("![training loss](training_loss.png)", ["training_loss.png"]),
        ('![a](plots/loss.png "Loss") and ![b](<b.png>)', ["plots/loss.png", "b.png"]),
        ("![x](https://evil.example/x.png)", []),  # not a file of the repo
        ("![x](../other/secret.png) ![y](/etc/passwd)", []),
        ("[a link](notes.md)", []),  # links are not images
    ],
)
def test_linked_files_are_relative_images_only(markdown, files):
    assert linked_files(markdown) == files


def test_images_become_data_urls_or_a_reason():
    markdown = "A\n\n![training loss](training_loss.png)\n\n![gone](gone.png)"
    out = inline_images(
        markdown, {"training_loss.png": (b"\x89PNG", "image/png"), "gone.png": "HTTP 404"}
    )
    assert "![training loss](data:image/png;base64,iVBORw==)" in out
    assert "gone: HTTP 404" in shown(out) and "gone.png)" not in out


def test_revisions_with_aliases_and_their_metrics_side_by_side():
    assert revisions_frame(ROW, CARD).to_dict("records") == [
        {"revision": "s1", "aliases": "prod"},
        {"revision": "s0", "aliases": "staging"},
    ]
    frame = revision_metrics(CARD, "s0", "s1")
    assert list(frame.columns) == ["metric", "s0", "s1", "change"]
    records = frame.set_index("metric").to_dict("index")
    assert records["dates/exact_match"] == {"s0": 0.5, "s1": 0.7, "change": 0.2}
    assert math.isnan(records["general_mc/acc"]["change"])  # unknown on one side


def test_lineage_falls_back_to_the_index_row():
    row = AdapterRow(
        "o/n", base_model="tiny/base", sha="s9", revisions=("s9",), aliases={"prod": "s9"}
    )
    card = AdapterCardView("o/n", "")
    assert "revision not pinned" in lineage_markdown(row, card)
    assert revisions_frame(row, card).to_dict("records") == [{"revision": "s9", "aliases": "prod"}]
