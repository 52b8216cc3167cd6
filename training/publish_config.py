"""Where a job publishes its adapter."""

from __future__ import annotations

from dataclasses import dataclass, field

from loradock.training.config_checks import raise_problems


@dataclass
class PublishConfig:
    """Where the adapter goes: a repo in the configured store (local hub by default)."""

    repo_id: str | None = None
    private: bool = False
    task: str | None = None
    aliases: list[str] = field(default_factory=list)
    enabled: bool = True

    def __post_init__(self) -> None:
        from loradock.errors import InvalidNameError
        from loradock.registry.names import validate_alias, validate_repo_id

        problems = []
        if self.enabled and not self.repo_id:
            problems.append("publish.repo_id is required (or set publish.enabled: false)")
        for check, value in [(validate_repo_id, self.repo_id)] * bool(self.repo_id) + [
            (validate_alias, a) for a in self.aliases
        ]:
            try:
                check(value)
            except InvalidNameError as exc:
                problems.append(f"publish: {exc}")
        raise_problems("publish config", problems)
