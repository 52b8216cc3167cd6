"""What every route needs (engine, registry, resolver, metrics, keys), reached through a dependency.

Routers take ``state: ServerState = Depends(state_of)``; nothing imports the app module, so
the routes and the app factory form no import cycle.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import Request

from loradock.serving.config import ServerConfig
from loradock.serving.engines.base import Engine
from loradock.serving.http.auth import KeyChecker
from loradock.serving.http.errors import Redactor
from loradock.serving.http.metrics import ServerMetrics
from loradock.serving.resolver import AdapterResolver


@dataclass
class ServerState:
    engine: Engine
    registry: Any
    config: ServerConfig
    resolver: AdapterResolver
    metrics: ServerMetrics
    keys: KeyChecker
    redact: Redactor
    started: bool = False


def state_of(request: Request) -> ServerState:
    return request.app.state.loradock
