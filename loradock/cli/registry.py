"""``loradock registry ...``: publish, sync, search, show and resolve adapters; manage aliases.

Each command parses its options and calls one function of the registry facade
(``loradock.registry.api.Registry``); tables are for people, ``--json`` is for scripts.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from loradock.cli._common import console, print_json, print_table, to_jsonable

app = typer.Typer(
    help="The adapter registry: publish, sync the index, search, show, resolve, aliases.",
    no_args_is_help=True,
)
alias_app = typer.Typer(
    help="Aliases (prod, staging): Hub tags naming one revision of a repo.", no_args_is_help=True
)
app.add_typer(alias_app, name="alias")

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON (for scripts).")]


class Kind(StrEnum):
    adapter = "adapter"
    base = "base"
    merge = "merge"
    all = "all"


def _registry():
    from loradock.registry.api import Registry

    return Registry.open()


def _short(sha: str | None) -> str:
    return (sha or "")[:10]


def _measured_on(record: Any, metric: str) -> str:
    """What ``record``'s value of ``metric`` was measured on: task version, n-shot, config."""
    from loradock.registry.records import TaskVersion

    return (record.metric_versions.get(metric) or TaskVersion()).label


def _print_records(title: str, records: list[Any], metric: str | None = None) -> None:
    from rich.markup import escape

    from loradock.registry.records import version_note

    # Names and shas are what people copy from this table: those columns never wrap or cut.
    table = Table(title=title)
    table.add_column("repo", no_wrap=True)
    table.add_column("sha", no_wrap=True)
    for name in ("base model", "tasks", "rank", "aliases"):
        table.add_column(name)
    if metric:
        table.add_column(metric, justify="right", no_wrap=True)
        table.add_column("measured on")  # task version, n-shot, config hash
    for r in records:
        row = [
            r.repo_id,
            _short(r.sha),
            r.base_model or f"({r.kind})",
            ", ".join(r.tasks),
            "" if r.rank is None else str(r.rank),
            ", ".join(r.aliases),
        ]
        if metric:
            value = r.metrics.get(metric)
            row.append("" if value is None else f"{value:.4g}")
            row.append("" if value is None else _measured_on(r, metric))
        table.add_row(*row)
    console.print(table)
    note = version_note(records, metric) if metric else None
    if note:
        console.print(f"[bold yellow]warning:[/] {escape(note)}", highlight=False, markup=True)


@app.command()
def sync(
    author: Annotated[
        str | None,
        typer.Option(help="Only this namespace (user or org); use it against huggingface.co."),
    ] = None,
    as_json: JsonOption = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar (on stderr).")] = True,
) -> None:
    """Index every repo and revision of the store that the index has not seen yet.

    Repos that cannot be indexed (a broken card, missing files) are listed and skipped; the
    command then exits with status 1, after indexing everything else.
    """
    report = _registry().sync(author=author, progress=progress and not as_json)
    if as_json:
        print_json(report)
    else:
        console.print(
            f"synced: {report.repos_seen} repos seen, {report.revisions_added} revisions added, "
            f"{report.repos_unchanged} unchanged, {report.repos_removed} removed "
            f"({report.seconds:.1f} s)"
        )
        for line in report.errors:
            console.print(f"[yellow]skipped:[/] {line}", highlight=False, markup=True)
    if report.errors:
        raise typer.Exit(1)


@app.command()
def gc(
    keep: Annotated[
        int, typer.Option(min=1, help="Snapshots kept per repo, newest first (plus aliased).")
    ] = 3,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only list what would be removed.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Remove what killed writers left (temporary blobs, refs, staging folders) and prune the
    snapshot cache to the KEEP newest revisions per repo, keeping latest and aliased ones."""
    from loradock.registry.gc import collect_garbage

    report = collect_garbage(_registry(), keep=keep, dry_run=dry_run)
    if as_json:
        print_json(report)
        return
    verb = "would remove" if dry_run else "removed"
    console.print(
        f"gc: {verb} {len(report.leftovers)} leftovers and {len(report.pruned)} snapshots "
        f"({report.pruned_bytes / 1e6:.1f} MB); {report.kept} snapshots kept",
        highlight=False,
    )
    for line in [*report.leftovers, *report.pruned]:
        console.print(f"  {line}", highlight=False, markup=False)


@app.command()
def search(
    base: Annotated[str | None, typer.Option("--base", help="Base model id.")] = None,
    task: Annotated[str | None, typer.Option(help="Task name, e.g. dates.")] = None,
    tag: Annotated[str | None, typer.Option(help="A card tag.")] = None,
    metric: Annotated[
        str | None, typer.Option(help="Metric 'task/metric' to filter on (with --min).")
    ] = None,
    min_value: Annotated[
        float | None, typer.Option("--min", help="Keep rows with metric >= this.")
    ] = None,
    sort: Annotated[
        str | None, typer.Option(help="Sort by a metric 'task/metric', or created_at/rank/...")
    ] = None,
    ascending: Annotated[bool, typer.Option(help="Lowest first.")] = False,
    limit: Annotated[int, typer.Option(help="At most this many rows.")] = 50,
    kind: Annotated[Kind, typer.Option(help="What kind of repo to list.")] = Kind.adapter,
    as_json: JsonOption = False,
) -> None:
    """Search the index (latest revision of each repo): by base, task, tag, metric."""
    from loradock.registry.search_query import SearchQuery

    query = SearchQuery(
        base_model=base,
        task=task,
        tag=tag,
        metric=metric,
        min_value=min_value,
        sort=sort,
        descending=not ascending,
        limit=limit,
        kind=None if kind is Kind.all else kind.value,
    )
    rows = _registry().search(query)
    if as_json:
        print_json(rows)
        return
    _print_records(f"{len(rows)} result(s)", rows, query.sort_metric or metric)
    if not rows:
        console.print("Nothing matched. Run `loradock registry sync` if the store has new repos.")


@app.command()
def show(
    name: Annotated[str, typer.Argument(help="org/name, org/name@<sha> or org/name@<alias>.")],
    as_json: JsonOption = False,
) -> None:
    """One revision in full (metrics, card fields), with the repo's aliases and revisions."""
    details = _registry().describe(name)
    record = details.record
    if as_json:
        print_json({"record": record, "aliases": details.aliases, "revisions": details.revisions})
        return
    fields = to_jsonable(record)
    fields.pop("metrics")
    fields.pop("metric_versions")  # shown beside each metric
    print_table(record.name, ["field", "value"], [[k, v] for k, v in fields.items()])
    if record.metrics:
        print_table(
            "metrics",
            ["metric", "value", "measured on"],
            [[k, v, _measured_on(record, k)] for k, v in sorted(record.metrics.items())],
        )
    print_table(
        f"revisions of {record.repo_id}",
        ["sha", "latest", "aliases", "updated", "metrics"],
        [
            [
                r.sha,
                "yes" if r.is_latest else "",
                ", ".join(r.aliases),
                r.updated_at.isoformat(timespec="seconds"),
                ", ".join(f"{k}={v:.4g}" for k, v in sorted(r.metrics.items())),
            ]
            for r in details.revisions
        ],
    )


@app.command()
def resolve(
    name: Annotated[str, typer.Argument(help="org/name, org/name@<sha> or org/name@<alias>.")],
    as_json: JsonOption = False,
) -> None:
    """Print the local path of a verified snapshot of NAME (fetched if needed)."""
    resolved = _registry().resolve(name)
    if as_json:
        print_json({"repo_id": resolved.repo_id, "sha": resolved.sha, "path": resolved.path})
    else:
        print(resolved.path)


@app.command()
def publish(
    folder: Annotated[Path, typer.Argument(help="A PEFT adapter folder.")],
    repo_id: Annotated[str, typer.Argument(help="Where to publish it: org/name.")],
    alias: Annotated[
        list[str] | None, typer.Option("--alias", help="Alias to set on the new revision.")
    ] = None,
    private: Annotated[bool, typer.Option(help="Create the repo as private.")] = False,
    base: Annotated[
        str | None,
        typer.Option("--base", help="Base model id, when FOLDER has no README.md card."),
    ] = None,
    task: Annotated[
        str | None, typer.Option(help="Task name for the card built with --base.")
    ] = None,
    message: Annotated[str | None, typer.Option(help="Commit message.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Validate an adapter folder, upload it as a new revision with its card, and index it.

    The card is FOLDER/README.md, or one built from --base/--task (which replaces it).
    """
    card = None
    if base is not None:
        from loradock.registry.card import build_adapter_card

        card = build_adapter_card(base_model=base, task=task)
    published = _registry().publish(
        folder,
        repo_id,
        card=card,
        private=private,
        aliases=tuple(alias or ()),
        commit_message=message,
    )
    if as_json:
        print_json(
            {
                "repo_id": published.repo_id,
                "sha": published.sha,
                "name": published.name,
                "aliases": published.aliases,
                "kind": published.kind,
            }
        )
    else:
        console.print(f"published {published.name}" + "".join(f" @{a}" for a in published.aliases))


@app.command()
def compatible(
    base: Annotated[str, typer.Argument(help="Base model id, e.g. acme/tiny-base.")],
    max_rank: Annotated[
        int | None, typer.Option(help="Only adapters of at most this rank.")
    ] = None,
    limit: Annotated[int, typer.Option(help="At most this many rows.")] = 50,
    as_json: JsonOption = False,
) -> None:
    """Adapters trained on BASE (latest revisions), highest rank first."""
    rows = _registry().compatible(base, max_rank=max_rank, limit=limit)
    if as_json:
        print_json(rows)
        return
    _print_records(f"{len(rows)} adapter(s) for {base}", rows)


@alias_app.command("set")
def alias_set(
    repo_id: Annotated[str, typer.Argument(help="org/name")],
    alias: Annotated[str, typer.Argument(help="prod, staging, ...")],
    revision: Annotated[str, typer.Argument(help="A sha, 'main', or another alias.")] = "main",
    as_json: JsonOption = False,
) -> None:
    """Point ALIAS of REPO_ID at REVISION (moving it if it is set)."""
    sha = _registry().set_alias(repo_id, alias, revision)
    if as_json:
        print_json({"repo_id": repo_id, "alias": alias, "sha": sha})
    else:
        console.print(f"{repo_id}@{alias} -> {sha}")


@alias_app.command("rm")
def alias_rm(
    repo_id: Annotated[str, typer.Argument(help="org/name")],
    alias: Annotated[str, typer.Argument(help="The alias to remove.")],
) -> None:
    """Remove ALIAS from REPO_ID (the revision itself stays)."""
    _registry().remove_alias(repo_id, alias)
    console.print(f"removed {repo_id}@{alias}")


@alias_app.command("list")
def alias_list(
    repo_id: Annotated[str, typer.Argument(help="org/name")],
    as_json: JsonOption = False,
) -> None:
    """The aliases of REPO_ID and the revisions they name."""
    aliases = _registry().aliases(repo_id)
    if as_json:
        print_json(aliases)
    else:
        print_table(f"aliases of {repo_id}", ["alias", "sha"], sorted(aliases.items()))
