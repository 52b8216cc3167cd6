"""A local Ray cluster running the replicas application of ``loradock serve --replicas``."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from tests.helpers.processes import free_port
from tests.helpers.serving import ADMIN_KEY, API_KEY, BASE_ID


@contextmanager
def replicas_app(
    settings: Any, *, num_cpus: int, env: Mapping[str, str], **options: Any
) -> Iterator[str]:
    """Serve ``BASE_ID`` with ``options`` (``ServerConfig.from_options``, the test keys set)
    on a fresh local cluster; yields the endpoint's URL, and shuts Ray down after."""
    import ray
    from ray import serve

    from loradock.serving.config import ServerConfig
    from loradock.serving.scale.app import APP_NAME, build_application

    ray.init(num_cpus=num_cpus, include_dashboard=False, runtime_env={"env_vars": dict(env)})
    try:
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        config = ServerConfig.from_options(
            base=BASE_ID, api_key=API_KEY, admin_key=ADMIN_KEY, **options
        )
        serve.run(build_application(config, settings=settings), name=APP_NAME, route_prefix="/")
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()
