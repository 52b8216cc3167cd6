"""``ScaleConfig``: the replicas part of the server's configuration (``ServerConfig.scale``).

Plain values, no Ray: the configuration imports it whether or not replicas are asked for.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from loradock.serving.config_fields import int_problems, option, refuse

_SCALE_NEEDS_REPLICAS = ("ray_address", "min_replicas", "max_replicas", "target_ongoing_requests")


@dataclass(frozen=True)
class ScaleConfig:
    """Replicas behind one endpoint on Ray Serve (``serving/scale/``; ``loradock[scale]``).

    Without ``replicas`` the server is one process and Ray is never imported; every other
    field here needs ``replicas``. Any autoscaling field turns Ray Serve's autoscaler on, with
    ``replicas`` as the initial count between ``min_replicas`` (default 1) and
    ``max_replicas`` (default ``replicas``)."""

    replicas: int | None = option(
        None, "Serve with N engine replicas behind one endpoint on Ray Serve"
    )
    ray_address: str | None = option(
        None, "Replicas: the Ray cluster to join (default: start one on this machine)"
    )
    min_replicas: int | None = option(None, "Replicas: autoscaling's fewest (default 1)")
    max_replicas: int | None = option(None, "Replicas: autoscaling's most (default --replicas)")
    target_ongoing_requests: float | None = option(
        None, "Replicas: requests per replica autoscaling aims at (Ray's default 2)"
    )

    def __post_init__(self) -> None:
        refuse(self.problems(vars(self)))

    @staticmethod
    def problems(v: Mapping[str, Any]) -> list[str]:
        lows = {"replicas": 1, "min_replicas": 1, "max_replicas": 1}
        problems = int_problems(v, lows, optional=set(lows))
        target = v["target_ongoing_requests"]
        number = isinstance(target, int | float) and not isinstance(target, bool)
        if target is not None and not (number and target > 0):
            problems.append(f"target_ongoing_requests={target!r} must be a number > 0")
        given = [n for n in _SCALE_NEEDS_REPLICAS if v[n] is not None]
        if v["replicas"] is None:
            return problems + [
                f"{name}={v[name]!r} configures replicas, but --replicas is not given: "
                f"add --replicas N or drop --{name.replace('_', '-')}"
                for name in given
            ]
        if problems:
            return problems
        low, high = v["min_replicas"] or 1, v["max_replicas"] or v["replicas"]
        if not low <= v["replicas"] <= high:
            problems.append(
                f"replicas={v['replicas']} must lie between min_replicas={low} and "
                f"max_replicas={high}"
            )
        return problems

    def autoscaling(self) -> dict[str, Any] | None:
        """Ray Serve's ``autoscaling_config``, or None for a fixed ``replicas``."""
        knobs = (self.min_replicas, self.max_replicas, self.target_ongoing_requests)
        if self.replicas is None or all(k is None for k in knobs):
            return None
        out = {
            "min_replicas": self.min_replicas or 1,
            "max_replicas": self.max_replicas or self.replicas,
            "initial_replicas": self.replicas,
        }
        if self.target_ongoing_requests is not None:
            out["target_ongoing_requests"] = self.target_ongoing_requests
        return out
