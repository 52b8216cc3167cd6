"""The Ray Serve application behind ``loradock serve --replicas N``.

``build_application(config)`` binds two deployments: ``ingress`` (the FastAPI app of one
process, ``http/app.py``'s ``create_app``, over a ``RemoteEngine``: the same routes, key gate,
resolver and metrics) and ``engine`` (``EngineReplica``, ``--replicas`` of them, or
autoscaled). ``serve_replicas(config)`` joins or starts a Ray cluster and runs it on
``--host``/``--port`` through Ray Serve's HTTP proxy until interrupted.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from ray import serve

from loradock.serving.config import ServerConfig
from loradock.serving.scale.metrics import ReplicaCollector
from loradock.serving.scale.remote import RemoteEngine
from loradock.serving.scale.replica import EngineReplica

log = logging.getLogger(__name__)
APP_NAME = "loradock"
INGRESS_MAX_ONGOING = 4096  # the engines' queues (--max-queue, then 429) bound the work


class Ingress:
    """The ingress deployment: ``serve.ingress()`` runs the app this builds in the replica."""

    def __init__(
        self, config: ServerConfig, settings: Any, engine: Any, multiplexed: bool = True
    ) -> None:
        self.config, self.settings = config, settings
        self.engine_handle, self.multiplexed = engine, multiplexed

    def __serve_build_asgi_app__(self):
        from loradock.registry.api import Registry
        from loradock.serving.http.app import create_app
        from loradock.serving.server import check_listed_adapters

        registry = Registry.open(self.settings)
        base = registry.resolve_base(self.config.base)
        engine = RemoteEngine(
            self.engine_handle,
            self.config,
            base.path,
            registry=registry,
            multiplexed=self.multiplexed,
        )
        app = create_app(engine, registry=registry, config=self.config, base=base)
        check_listed_adapters(self.config, app.state.loradock.resolver)
        app.state.loradock.metrics.registry.register(ReplicaCollector(engine))
        return app


def replica_resources(config: ServerConfig) -> dict[str, Any]:
    """What one engine replica takes from Ray (its ``ray_actor_options``).

    PEFT: ``--threads`` CPUs. vLLM on a GPU: ``--tensor-parallel-size`` GPUs, and a CPU for
    each of its processes (the replica's, the engine core's, and one per GPU worker when the
    model is split). vLLM on a CPU: every CPU of this machine, since its worker binds its
    threads to a whole NUMA node's cores (``VLLM_CPU_OMP_THREADS_BIND=auto``), the same node
    for each vLLM on a machine: two would compete for the same cores.
    """
    if config.engine != "vllm":
        return {"num_cpus": config.peft.torch_threads or 1}
    from loradock.serving.engines.vllm.args import has_cuda

    if has_cuda():
        gpus = config.vllm.tensor_parallel_size or 1
        return {"num_cpus": 2 + (gpus if gpus > 1 else 0), "num_gpus": gpus}
    return {"num_cpus": len(os.sched_getaffinity(0))}


def build_application(
    config: ServerConfig, *, settings: Any = None, multiplexed: bool = True
) -> Any:
    """The bound application; ``settings`` (``loradock.settings.Settings``) name the registry
    every deployment opens (None: each reads ``LORADOCK_*`` from its environment)."""
    peft, scale = config.peft, config.scale  # the sizes both engines share
    autoscaling = scale.autoscaling()
    engine = serve.deployment(
        EngineReplica,
        name="engine",
        num_replicas=None if autoscaling else scale.replicas,
        autoscaling_config=autoscaling,
        # Admission is the engine's (batch room, then its queue, then 429): Ray hands every
        # request over at once instead of queueing it in front.
        max_ongoing_requests=peft.max_batch_size + peft.max_queue,
        ray_actor_options=replica_resources(config),
    )
    ingress = serve.deployment(
        serve.ingress()(Ingress),
        name="ingress",
        max_ongoing_requests=INGRESS_MAX_ONGOING,
        ray_actor_options={"num_cpus": 0},
    )
    replica = engine.bind(config, settings)
    return ingress.bind(config, settings, replica, multiplexed)


def serve_replicas(config: ServerConfig) -> None:
    """Run the application on a Ray cluster (``--ray-address``, else a local one) until
    interrupted."""
    import ray

    ray.init(address=config.scale.ray_address)
    host, port = config.http.host, config.http.port
    serve.start(http_options={"host": host, "port": port})
    for warning in config.http.exposure():
        log.warning("%s", warning)
    log.info(
        "serving %s on http://%s:%s with %s replicas",
        config.base_model_name,
        host,
        port,
        config.scale.replicas,
    )
    serve.run(build_application(config), name=APP_NAME, route_prefix="/", blocking=True)
