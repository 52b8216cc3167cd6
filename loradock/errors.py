"""Every error loradock raises on purpose.

Each class also inherits the built-in exception a Python user would catch for it
(``AdapterNotFoundError`` is a ``LookupError``), as huggingface_hub does. The CLI prints
any ``LoradockError`` as its message alone, without a traceback; the server maps
``http_status`` onto the OpenAI error shape.
"""

from __future__ import annotations

from collections.abc import Iterable


class LoradockError(Exception):
    """Base class: a known failure whose message says what was wrong and what to do."""

    http_status: int = 400
    code: str = "loradock_error"


class ProblemsError(LoradockError):
    """Several problems found in one pass, raised once (vLLM's validate-everything style)."""

    def __init__(self, headline: str, problems: Iterable[str]):
        self.headline = headline
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{headline} ({len(self.problems)} problem(s)):\n{lines}")

    def __reduce__(self):
        # Pickled by its parts (the server's engine process sends errors to the HTTP process).
        return type(self), (self.headline, self.problems)


class ConfigError(ProblemsError, ValueError):
    """A config object (job YAML, server options, ...) failed validation."""

    code = "invalid_config"


class InvalidNameError(LoradockError, ValueError):
    """A repo id, revision or alias is malformed (or tries to escape a folder)."""

    code = "invalid_name"


class AdapterNotFoundError(LoradockError, LookupError):
    """No adapter (repo) of that name in the store or the index."""

    http_status = 404
    code = "model_not_found"


class RevisionNotFoundError(LoradockError, LookupError):
    """The repo exists but not that revision (commit sha, branch or alias)."""

    http_status = 404
    code = "revision_not_found"


class AliasNotFoundError(RevisionNotFoundError):
    """The alias (``@prod``, ``@staging``) is not set on that repo."""

    code = "alias_not_found"


class BaseModelNotFoundError(LoradockError, LookupError):
    """A base model was named that neither the registry nor the disk holds."""

    http_status = 404
    code = "base_model_not_found"


class CardError(LoradockError, ValueError):
    """A model card could not be parsed or would be written invalid."""

    code = "invalid_card"


class ArtifactError(LoradockError, ValueError):
    """An adapter folder is not a valid PEFT adapter (missing or corrupt files)."""

    code = "invalid_adapter"


class UnsafeArtifactError(ArtifactError):
    """A pickle-based file (``adapter_model.bin``) was refused: pickles can run code."""

    code = "unsafe_adapter"


class IncompatibleAdapterError(ProblemsError, ValueError):
    """An adapter cannot be attached to a base model; ``problems`` lists every reason."""

    http_status = 422
    code = "incompatible_adapter"


class StoreError(LoradockError, RuntimeError):
    """A Hub store failed (network, permissions, conflicting commit)."""

    http_status = 502
    code = "store_error"


class IntegrityError(StoreError):
    """A downloaded or stored file does not match its recorded hash."""

    code = "integrity_error"


class DataError(LoradockError, ValueError):
    """A training or evaluation data set is missing, empty or lacks a needed column."""

    code = "invalid_data"


class EvalError(LoradockError, RuntimeError):
    """An evaluation could not run (unknown task, malformed task YAML, ...)."""

    code = "eval_error"


class RequestError(LoradockError, ValueError):
    """An HTTP request the server cannot serve as sent (prompt longer than the context, ...)."""

    code = "invalid_request"


class PayloadTooLargeError(RequestError):
    """An HTTP request body over the server's size limit, refused before it is read (HTTP 413)."""

    http_status = 413
    code = "request_too_large"


class QueueFullError(LoradockError, RuntimeError):
    """The server's bounded request queue is full; the client should retry later (HTTP 429)."""

    http_status = 429
    code = "queue_full"


class EngineError(LoradockError, RuntimeError):
    """The model engine stopped (its process exited); the server answers 503 until restarted."""

    http_status = 503
    code = "engine_unavailable"


class RequestTimeoutError(LoradockError, TimeoutError):
    """A request ran past the server's ``--request-timeout``: cancelled in the engine (HTTP 504)."""

    http_status = 504
    code = "request_timeout"


class ClientDisconnectedError(LoradockError, ConnectionError):
    """The client left before its answer: its generation is cancelled, nobody reads the reply
    (HTTP 499, nginx's "client closed request", in the request metrics)."""

    http_status = 499
    code = "client_closed_request"


class GenerationError(LoradockError, RuntimeError):
    """Generation failed for one request (its model output was not finite, ...): that request
    gets a 500, the others sharing its batch go on."""

    http_status = 500
    code = "generation_failed"


class AuthenticationError(LoradockError, PermissionError):
    """A request carries no API key, or a wrong one (HTTP 401)."""

    http_status = 401
    code = "invalid_api_key"


class PermissionDeniedError(LoradockError, PermissionError):
    """A valid key that may not use this route (an API key on an admin route, HTTP 403)."""

    http_status = 403
    code = "permission_denied"
