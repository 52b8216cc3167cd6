"""Report, forgetting flags, publishing rules and the judge's pairing logic, on made-up results
(no model runs here: the numbers are chosen to sit on each side of the thresholds)."""

from __future__ import annotations

import dataclasses
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from loradock.evals.results import EvalTarget, MetricResult, TargetResult
from loradock.evals.run import EvalOptions, EvalRun
from loradock.evals.targets import TargetPlan


def _m(task, metric, value, kind, stderr=0.01, higher=True):
    return MetricResult(task, metric, value, stderr, higher, f"loradock/{task}", "abc", kind, 10)


def _run(adapter_metrics: dict[str, list[MetricResult]], threshold=0.05) -> EvalRun:
    from loradock.evals.taskdir import load_task_specs

    base = EvalTarget("acme/base", "base", "acme/base", Path("/nonexistent"), "acme/base", "b" * 40)
    base_metrics = [
        _m("dates", "exact_match", 0.10, "task"),
        _m("general_mc", "acc", 0.60, "general"),
        _m("heldout_ppl", "bits_per_byte", 1.00, "perplexity", None, False),
        _m("heldout_ppl", "word_perplexity", 30.0, "perplexity", None, False),
    ]
    results = [TargetResult(base, base_metrics, raw={"results": {}})]
    adapters = []
    for i, (label, metrics) in enumerate(adapter_metrics.items()):
        t = EvalTarget(
            label, "adapter", label, Path("/nonexistent"), label.split("@")[0], f"{i}" * 40
        )
        adapters.append(t)
        results.append(TargetResult(t, metrics, raw={"results": {}}))
    specs = load_task_specs()
    tasks = [specs[n] for n in ("dates", "general_mc", "heldout_ppl")]
    return EvalRun(
        plan=TargetPlan(base, tuple(adapters)),
        tasks=tasks,
        results=results,
        options=EvalOptions(forgetting_threshold=threshold),
        task_hashes={s.name: "0" * 64 for s in tasks},
    )


@pytest.mark.parametrize(
    ("acc", "acc_stderr", "bpb", "flag_acc", "flag_bpb"),
    [
        (0.60, 0.01, 1.00, False, False),  # unchanged
        (0.58, 0.01, 1.04, False, False),  # within 2 combined stderr / 5% relative
        (0.50, 0.01, 1.00, True, False),  # accuracy down 10 points, stderr 1 point
        (0.50, 0.08, 1.00, False, False),  # the same drop, inside a noisy measurement
        (0.70, 0.01, 1.10, False, True),  # perplexity (no stderr) up 10% relative
        (0.40, 0.01, 1.50, True, True),
    ],
)
def test_forgetting_is_flagged_beyond_the_stderr(acc, acc_stderr, bpb, flag_acc, flag_bpb):
    from loradock.evals.forgetting import forgetting_checks

    run = _run(
        {
            "acme/a@1111111": [
                _m("dates", "exact_match", 0.9, "task"),
                _m("general_mc", "acc", acc, "general", stderr=acc_stderr),
                _m("heldout_ppl", "bits_per_byte", bpb, "perplexity", None, False),
                _m("heldout_ppl", "word_perplexity", 99.0, "perplexity", None, False),
            ]
        }
    )
    checks = {c.metric: c for c in forgetting_checks(run)}
    assert set(checks) == {"acc", "bits_per_byte"}  # task metrics are gains, not forgetting
    assert checks["acc"].flagged is flag_acc and checks["bits_per_byte"].flagged is flag_bpb
    assert checks["acc"].delta == pytest.approx(acc - 0.60)
    assert "stderr" in checks["acc"].limit and "no stderr" in checks["bits_per_byte"].limit


@pytest.mark.parametrize(
    ("version", "task_hash", "shots", "marked"),
    [
        ("1.0", "h", 0, False),
        ("2.0", "h", 0, True),
        ("1.0", "other", 0, True),
        ("1.0", "h", 5, True),
    ],
    ids=["same", "version", "config", "n-shot"],
)
def test_targets_on_another_task_version_are_marked(version, task_hash, shots, marked):
    from loradock.evals.forgetting import version_mismatches
    from loradock.evals.report import render_markdown

    def m(v, h, n):
        return dataclasses.replace(
            _m("dates", "exact_match", 0.5, "task"), task_version=v, task_hash=h, num_fewshot=n
        )

    run = _run({"acme/a@1111111": [m(version, task_hash, shots)]})
    run.results[0].metrics[0] = m("1.0", "h", 0)
    assert version_mismatches(run) == ({"dates": ["acme/a@1111111"]} if marked else {})
    assert ("Not comparable" in render_markdown(run, {}, {})) is marked


def _docs(docs):
    return docs


_CONFIG = {
    "task": "dates",
    "process_docs": "<function dates_docs at 0x7f10c6251ee0>",
    "dataset_kwargs": {"data_files": {"test": "/tmp/a/test.jsonl"}},
    "metadata": {"version": 1.0, "config_source": "/tmp/loradock-eval-tasks-a/dates.yaml"},
    "num_fewshot": 0,
}


@pytest.mark.parametrize(
    ("change", "same"),
    [
        ({"process_docs": "<function dates_docs at 0x7f7eb471a200>"}, True),  # another process
        ({"dataset_kwargs": {"data_files": {"test": "/elsewhere/test.jsonl"}}}, True),
        ({"metadata": {"version": 1.0, "config_source": "/home/me/tasks/dates.yaml"}}, True),
        ({"process_docs": "<function other_docs at 0x7f10c6251ee0>"}, False),
        ({"process_docs": _docs}, False),  # a function object: named by module and name
        ({"metadata": {"version": 2.0}}, False),
        ({"num_fewshot": 5}, False),
    ],
    ids=["address", "data-path", "yaml-path", "function", "callable", "version", "n-shot"],
)
def test_task_hash_changes_with_the_measurement_only(change, same):
    from loradock.evals.results import config_text

    changed = config_text({**_CONFIG, **change})
    assert (config_text(_CONFIG) == changed) is same
    assert " at 0x" not in changed and "/tmp/" not in changed


def test_report_files_and_flags(tmp_path):
    from loradock.evals.report import write_report

    run = _run(
        {
            "acme/good@1111111": [
                _m("dates", "exact_match", 0.80, "task"),
                _m("general_mc", "acc", 0.61, "general"),
            ],
            "acme/forgets@2222222": [
                _m("dates", "exact_match", 0.95, "task"),
                _m("general_mc", "acc", 0.30, "general"),
            ],
        }
    )
    files = write_report(run, tmp_path / "r")
    md = files["markdown"].read_text()
    html = files["html"].read_text()
    assert md.count("**FORGETTING**") == 1 and "acme/forgets@2222222" in md
    assert "0.8000 ± 0.0100 (+0.7▲)" in md  # value, stderr and delta against the base
    for task in ("dates", "general_mc", "heldout_ppl"):
        assert (tmp_path / "r" / "plots" / f"{task}.png").stat().st_size > 1000
        assert f'src="plots/{task}.png"' in html
    assert {p.name for p in (tmp_path / "r" / "raw").iterdir()} == {
        "acme_base.json",
        "acme_good_1111111.json",
        "acme_forgets_2222222.json",
    }


class ScriptedJudge:
    """Answers like a model: candidates echo their name, the judge follows a rule."""

    def __init__(self, model, rule=None):
        self.model = model
        self.rule = rule

    def chat(self, prompt, *, max_tokens):
        if self.rule is None:
            return f"answer from {self.model}" + ("!" * len(self.model))
        a, b = (re.search(rf"<<<{x} (\w+)>>>\n(.*?)\n<<<END \1>>>", prompt, re.S)[2] for x in "AB")
        return self.rule(a, b)


@pytest.mark.parametrize(
    ("rule", "wins_b", "wins_a", "ties"),
    [
        (lambda a, b: "A", 0, 0, 3),  # always the first shown: position bias, all ties
        (lambda a, b: "B" if len(b) > len(a) else "A", 3, 0, 0),  # prefers the longer answer
        (lambda a, b: "Verdict: T", 0, 0, 3),
        (lambda a, b: "I cannot decide", 0, 0, 3),
    ],
    ids=["position-bias", "consistent", "tie", "unparseable"],
)
def test_judge_counts_only_consistent_wins(rule, wins_b, wins_a, ties):
    from loradock.evals.judge import judge_pairwise

    result = judge_pairwise(
        ["q1", "q2", "q3"],
        candidate_a=ScriptedJudge("base"),
        candidate_b=ScriptedJudge("adapter-longer"),
        judge=ScriptedJudge("judge", rule),
    )
    assert (result.wins_b, result.wins_a, result.ties) == (wins_b, wins_a, ties)
    assert result.win_rate_b == pytest.approx((wins_b + ties / 2) / 3)


@pytest.mark.parametrize(
    ("content", "quoted"),
    [("", "is empty"), ('{"prompt": ""}\n', "non-empty"), ("{nope\n", "not JSON")],
)
def test_judge_prompt_file_errors(tmp_path, content, quoted):
    from loradock.errors import DataError
    from loradock.evals.judge import load_prompts

    path = tmp_path / "prompts.jsonl"
    path.write_text(content)
    with pytest.raises(DataError, match=quoted):
        load_prompts(path)
    assert len(load_prompts()) >= 10  # the shipped set


HOSTILE = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "[click](javascript:alert(1))",
    "x` <b>bold</b> `y",
    "a | b\n| injected | row |",
    "# heading",
]
# What the report itself writes; anything else came from a value.
REPORT_TAGS = {"html", "head", "meta", "title", "style", "body", "h1", "h2", "p", "ul", "li"}
REPORT_TAGS |= {"code", "strong", "table", "thead", "tbody", "tr", "th", "td", "img", "a"}


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.attrs = set(), []

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        self.attrs += attrs


def _report_page(where: str, value: str) -> str:
    """The HTML report with ``value`` put where a card, a task folder or a CLI puts it."""
    from loradock.evals.judge import JudgedPair, JudgeResult
    from loradock.evals.report import render_html, render_markdown

    label = value if where == "adapter label" else "acme/a@1111111"
    metric = value if where == "metric name" else "exact_match"
    run = _run({label: [_m("dates", metric, 0.9, "task"), _m("general_mc", "acc", 0.4, "general")]})
    if where == "task name":
        run.tasks[0] = dataclasses.replace(run.tasks[0], name=value)
        run.results[1].metrics[0] = _m(value, "exact_match", 0.9, "task")
    pair = JudgedPair("q", "a", "b", ("A", "B"), "tie")
    judge = value if where == "judge model" else "judge"
    run.judged = [JudgeResult("acme/base", label, judge, (pair,))]
    return render_html(render_markdown(run, {}, {label: "raw/x.json"}))


@pytest.mark.parametrize("value", HOSTILE)
@pytest.mark.parametrize("where", ["adapter label", "task name", "metric name", "judge model"])
def test_report_values_are_escaped(where, value):
    page = _report_page(where, value)
    parsed = _Tags()
    parsed.feed(page)
    assert parsed.tags <= REPORT_TAGS, parsed.tags - REPORT_TAGS
    assert not [a for a in parsed.attrs if a[0].startswith("on") or "javascript" in str(a[1])]
    # No value adds or splits a table row: the same rows as with a plain name.
    plain = _report_page(where, "plain")
    assert page.count("<tr>") == plain.count("<tr>")
    assert page.count("<td>") == plain.count("<td>")


@pytest.mark.parametrize(
    ("markdown_text", "shown"),
    [
        ("<script>alert(1)</script>", "&lt;script&gt;"),
        ("<div onclick=x>\nblock\n</div>", "&lt;div onclick=x&gt;"),
    ],
)
def test_raw_html_in_report_markdown_is_shown_as_text(markdown_text, shown):
    from loradock.evals.report import render_html

    page = render_html(markdown_text)
    assert shown in page and "<script" not in page and "<div" not in page
