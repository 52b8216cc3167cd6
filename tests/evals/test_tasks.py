"""The shipped task YAMLs, their data, and the exact metrics they score with (no model needed)."""

from __future__ import annotations

import importlib.util
import json
from collections import Counter
from pathlib import Path

import pytest
import yaml

from loradock.errors import DataError, EvalError
from loradock.evals.taskdir import SHIPPED_TASKS_DIR, load_task_specs, materialize
from loradock.training.tasks import get_task

DATA = Path(SHIPPED_TASKS_DIR).parent / "data"


def _utils():
    spec = importlib.util.spec_from_file_location("eval_utils", SHIPPED_TASKS_DIR / "utils.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_shipped_tasks_cover_training_tasks_general_and_perplexity():
    specs = load_task_specs()
    assert {"dates", "extraction", "general_mc", "heldout_ppl"} <= set(specs)
    kinds = {name: s.kind for name, s in specs.items()}
    assert kinds["dates"] == kinds["extraction"] == "task"
    assert kinds["general_mc"] == "general" and kinds["heldout_ppl"] == "perplexity"
    assert specs["dates"].generative and not specs["general_mc"].generative
    # Training data is read by path from training/data (never imported).
    assert specs["dates"].data_files["test"].parts[-3:] == ("data", "dates", "test.jsonl")


def test_general_mc_is_large_balanced_and_well_formed():
    rows = [json.loads(line) for line in (DATA / "general_mc.jsonl").read_text().splitlines()]
    assert len(rows) >= 100
    subjects = Counter(r["subject"] for r in rows)
    assert len(subjects) >= 5 and min(subjects.values()) >= 15
    assert len({r["id"] for r in rows}) == len(rows)
    for r in rows:
        assert len(r["choices"]) == 4 and len(set(r["choices"])) == 4, r
        assert 0 <= r["answer"] < 4
    # No answer position is a free win for a model that always picks one letter.
    positions = Counter(r["answer"] for r in rows)
    assert max(positions.values()) / len(rows) < 0.3
    assert (DATA / "README.md").is_file()


def test_materialize_writes_absolute_checked_paths(tmp_path, task_data):
    specs = load_task_specs(data_dir=task_data)
    out = materialize([specs["dates"], specs["heldout_ppl"]], tmp_path / "inc")
    written = yaml.safe_load(
        (out / "dates.yaml").read_text().replace("!function", "")
    )  # tags are lm-eval's; the path is what matters here
    path = Path(written["dataset_kwargs"]["data_files"]["test"])
    assert path.is_absolute() and path == (task_data / "dates" / "test.jsonl").resolve()
    assert (out / "utils.py").is_file()
    assert "!function" in (out / "dates.yaml").read_text()


@pytest.mark.parametrize(
    ("reply", "answer", "expected"),
    [
        ("2024-03-01", "2024-03-01", 1.0),
        ("  2024-03-01\n", "2024-03-01", 1.0),
        ("2024-3-1", "2024-03-01", 0.0),
        ("The date is 2024-03-01", "2024-03-01", 0.0),
        ("", "2024-03-01", 0.0),
    ],
)
def test_dates_metric_is_exact_match(reply, answer, expected):
    assert _utils().process_dates({"answer": answer}, [reply]) == {"exact_match": expected}
    assert get_task("dates").score([reply], [answer]) == {"exact_match": expected}


ANSWER = json.dumps({"name": "Ada Byron", "city": "London", "year": 1833})


@pytest.mark.parametrize(
    ("reply", "exact", "fields", "valid"),
    [
        (ANSWER, 1.0, 1.0, 1.0),
        ('{"year": 1833, "city": "London", "name": "Ada Byron"}', 1.0, 1.0, 1.0),
        ('{"name": "Ada Byron", "city": "Paris", "year": 1833}', 0.0, 2 / 3, 1.0),
        ('{"name": "Ada Byron", "city": "London", "year": "1833"}', 0.0, 2 / 3, 1.0),
        ("not json", 0.0, 0.0, 0.0),
        ("[1, 2]", 0.0, 0.0, 0.0),
        ("```json\n" + ANSWER + "\n```", 0.0, 0.0, 0.0),
    ],
)
def test_extraction_metrics(reply, exact, fields, valid):
    got = _utils().process_extraction({"answer": ANSWER}, [reply])
    assert got == pytest.approx(
        {"exact_match": exact, "field_accuracy": fields, "valid_json": valid}
    )
    # The same figures as training's held-out eval: one set of metric functions.
    trained = get_task("extraction").score([reply], [ANSWER])
    assert trained == pytest.approx({"exact_match": exact, "field_accuracy": fields})


def _write_task(folder: Path, text: str, data: str | None = "rows.jsonl", rows: str = '{"a": 1}\n'):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "t.yaml").write_text(text)
    if data:
        (folder / data).write_text(rows)
    return folder


GOOD = (
    "task: t\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: rows.jsonl\n"
    "test_split: test\noutput_type: generate_until\ndoc_to_text: '{{a}}'\n"
)


@pytest.mark.parametrize(
    ("yaml_text", "rows", "error", "quoted"),
    [
        ("task: [unclosed\n", '{"a": 1}\n', EvalError, "Malformed task YAML"),
        ("- just\n- a list\n", '{"a": 1}\n', EvalError, "expected a mapping"),
        (
            GOOD.replace("output_type: generate_until", "output_type: guess"),
            '{"a": 1}\n',
            EvalError,
            "'guess'",
        ),
        (GOOD.replace("task: t\n", ""), '{"a": 1}\n', EvalError, "missing key 'task'"),
        (GOOD.replace("test_split: test", "test_split: eval"), '{"a": 1}\n', EvalError, "'eval'"),
        (
            GOOD.replace("    test: rows.jsonl\n", "    test: nowhere.jsonl\n"),
            '{"a": 1}\n',
            DataError,
            "nowhere.jsonl",
        ),
        (GOOD, "", DataError, "is empty"),
        (GOOD, "\n\n", DataError, "is empty"),
        (GOOD, '{"a": 1}\n{broken\n', DataError, "line 2"),
    ],
    ids=[
        "syntax",
        "not-mapping",
        "output-type",
        "no-task",
        "split",
        "missing-file",
        "empty",
        "blank",
        "bad-json",
    ],
)
def test_bad_task_folders_give_clear_errors(tmp_path, yaml_text, rows, error, quoted):
    folder = _write_task(tmp_path / "tasks", yaml_text, rows=rows)
    with pytest.raises(error) as info:
        specs = load_task_specs(folder)
        materialize(specs.values(), tmp_path / "out")
    assert quoted in str(info.value)


class OracleLM:
    """An lm-eval model that knows every answer: each shipped task must then score 1.0.

    This checks the whole scoring path (data loading, prompts, metrics), not a model: for
    example that datasets' JSON reader turning ISO dates into timestamps is undone.
    """

    def __init__(self, answers: dict[str, str], choices: dict[str, str]):
        from lm_eval.api.model import LM

        class _Oracle(LM):
            def generate_until(self, requests):
                return [next(a for q, a in answers.items() if q in r.args[0]) for r in requests]

            def loglikelihood(self, requests):
                out = []
                for r in requests:
                    context, continuation = r.args
                    right = next(c for q, c in choices.items() if q in context)
                    out.append((0.0 if continuation.strip() == right else -10.0, True))
                return out

            def loglikelihood_rolling(self, requests):
                raise NotImplementedError

        self.lm = _Oracle()


def test_an_oracle_scores_one_on_every_shipped_task(tmp_path):
    import lm_eval
    from lm_eval.tasks import TaskManager

    shipped = load_task_specs()
    specs = [shipped[n] for n in ("dates", "extraction", "general_mc")]
    answers, choices = {}, {}
    for spec in specs:
        for line in spec.data_files["test"].read_text().splitlines()[:15]:
            row = json.loads(line)
            if "instruction" in row:
                answers[row["instruction"]] = row["answer"]
            else:
                choices[row["question"]] = row["choices"][row["answer"]]
    manager = TaskManager(include_path=str(materialize(specs, tmp_path)), include_defaults=False)
    results = lm_eval.simple_evaluate(
        model=OracleLM(answers, choices).lm,
        tasks=[s.name for s in specs],
        task_manager=manager,
        limit=15,
        bootstrap_iters=0,
    )["results"]
    assert results["dates"]["exact_match,none"] == 1.0
    assert results["extraction"]["exact_match,none"] == 1.0
    assert results["extraction"]["field_accuracy,none"] == 1.0
    assert results["general_mc"]["acc,none"] == 1.0


# Where lm_eval starts: the repository and /. Both run at once (each indexes lm-eval's
# built-in tasks for ~30 s on one core), so the test takes one run's time on two cores.
START_DIRS = {"repo": Path(SHIPPED_TASKS_DIR).resolve().parents[1], "root": Path("/")}


@pytest.mark.slow
def test_shipped_yamls_run_under_plain_lm_eval_from_any_directory(tmp_path, tiny_base):
    """Data paths are relative to the YAMLs' folder, not to where lm-eval is started."""
    import subprocess
    import sys

    lm_eval = Path(sys.executable).parent / "lm_eval"
    runs = {}
    for name, where in START_DIRS.items():
        out, log = tmp_path / name, tmp_path / f"{name}.log"
        args = [
            "--model", "hf",
            "--model_args", f"pretrained={tiny_base},dtype=float32",
            "--device", "cpu",
            "--include_path", str(Path(SHIPPED_TASKS_DIR).resolve()),
            "--tasks", "dates,heldout_ppl",
            "--limit", "2",
            "--output_path", str(out),
        ]  # fmt: skip
        with log.open("w") as sink:  # a file, not a pipe: neither run blocks on a full pipe
            proc = subprocess.Popen([str(lm_eval), *args], cwd=where, stdout=sink, stderr=sink)
        runs[name] = (proc, out, log)
    try:
        for name, (proc, out, log) in runs.items():
            assert proc.wait(timeout=600) == 0, f"from {name}: {log.read_text()[-3000:]}"
            (results_file,) = out.rglob("results_*.json")
            results = json.loads(results_file.read_text())
            assert results["n-samples"]["dates"]["effective"] == 2
            assert results["n-samples"]["heldout_ppl"]["effective"] == 2
            assert results["results"]["heldout_ppl"]["bits_per_byte,none"] > 0
    finally:  # a failed check leaves no run behind
        for proc, _, _ in runs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
