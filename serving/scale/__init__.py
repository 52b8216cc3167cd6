"""Replicas behind one endpoint on Ray Serve (``loradock serve --replicas N``; ``loradock[scale]``).

``app.py`` builds the Ray Serve application: an ingress deployment running the same FastAPI
app as one process (``http/``: routes, gate, resolver) over a ``RemoteEngine``
(``remote.py``), and ``EngineReplica`` deployments (``replica.py``), each an engine (PEFT or
vLLM, as ``--engine`` says) in its own process. Requests for an adapter carry its
``org/name@sha`` as Ray Serve's multiplexed model id, so Ray routes them to a replica that
has it loaded. Ray is imported only by these modules, which only ``--replicas`` imports.
"""
