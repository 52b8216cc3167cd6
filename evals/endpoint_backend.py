"""The endpoint eval backend: a running OpenAI-compatible server (``loradock serve``)."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from loradock.errors import ConfigError, EvalError
from loradock.evals.results import EvalTarget

if TYPE_CHECKING:
    from loradock.evals.catalog import TaskInfo


def normalise_endpoint(url: str) -> str:
    """``http://host:port`` (a trailing ``/v1`` or ``/`` dropped); raises on anything else."""
    parsed = urlparse(url or "")
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ConfigError(
            "Invalid endpoint",
            [f"endpoint {url!r} must be an http(s) URL such as http://127.0.0.1:8000"],
        )
    path = parsed.path.rstrip("/")
    if path.endswith("/v1"):
        path = path[: -len("/v1")]
    return f"{parsed.scheme}://{parsed.netloc}{path}"


@dataclass
class EndpointBackend:
    """A running OpenAI-compatible server (``loradock serve``): adapters are model names.

    Generative tasks alone go through lm-eval's ``local-chat-completions`` (each prompt sent
    as a chat message; the server applies the chat template) or ``local-completions`` (raw
    prompts, for models without one). Multiple-choice and perplexity tasks score
    log-likelihoods: ``local-completions`` sends token ids with ``echo`` and ``logprobs`` and
    reads the prompt's logprobs back, tokenising through the server's ``/tokenize`` (lm-eval's
    remote tokenizer), and applies the chat template itself from ``/tokenizer_info``, as the
    hf backend does; a run with such a task sends every task that way.
    """

    url: str
    api_key: str | None = None
    base_model_name: str | None = None  # what the server calls the base (its --served-base-name)
    chat: bool = True
    timeout: int = 120
    concurrency: int = 8  # requests in flight at once: the server batches them together
    name: str = "endpoint"

    def __post_init__(self) -> None:
        self.url = normalise_endpoint(self.url)
        self._scores = False  # a task needs log-likelihoods (check_tasks)

    def check_tasks(self, specs: Sequence[TaskInfo]) -> None:
        self._scores = any(not s.generative for s in specs)

    def served_name(self, target: EvalTarget) -> str:
        if target.kind == "adapter":
            return target.pinned_name or target.name
        return self.base_model_name or target.repo_id or target.name

    @contextmanager
    def model_for(self, target: EvalTarget):
        from lm_eval.models.openai_completions import LocalChatCompletion, LocalCompletionsAPI

        header = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        common = dict(
            model=self.served_name(target),
            tokenizer_backend=None,
            tokenized_requests=False,
            max_retries=1,
            num_concurrent=self.concurrency,
            timeout=self.timeout,
            header=header,
        )
        if self._scores:
            # Context and the one answer token lm-eval asks for must fit the server's context.
            remote = dict(
                tokenizer_backend="remote",
                tokenized_requests=True,
                max_length=self._server_context(header) - 1,
            )
            lm = _scoring_completions(
                base_url=f"{self.url}/v1/completions",
                **{**common, **remote, "auth_token": self.api_key},
            )
            yield lm, self.chat
            return
        if self.chat:
            lm = LocalChatCompletion(base_url=f"{self.url}/v1/chat/completions", **common)
        else:
            lm = LocalCompletionsAPI(base_url=f"{self.url}/v1/completions", **common)
        yield lm, self.chat

    def _server_context(self, header: dict[str, str]) -> int:
        import requests

        try:
            reply = requests.get(f"{self.url}/tokenizer_info", headers=header, timeout=self.timeout)
            reply.raise_for_status()
            return int(reply.json()["model_max_length"])
        except (requests.RequestException, KeyError, ValueError) as exc:
            raise EvalError(
                f"{self.url}/tokenizer_info did not answer ({exc}): log-likelihood tasks need a "
                "server with /tokenize and /tokenizer_info (loradock serve, or vLLM's)."
            ) from exc

    def close(self) -> None:
        return None


def _scoring_completions(**kwargs: Any) -> Any:
    """lm-eval's ``local-completions`` with the remote tokenizer, rendering chat prompts to
    text with the server's template (lm-eval 0.4 hands the remote backend the messages
    themselves, which its log-likelihood path cannot split)."""
    from lm_eval.models.openai_completions import LocalCompletionsAPI

    class ScoringCompletions(LocalCompletionsAPI):
        async def amodel_call(self, *args: Any, cache_keys: Any = None, **kw: Any) -> Any:
            # lm-eval 0.4's concurrent path hands a rolling window's cache key (None) to its
            # request cache, which cannot hash it; its one-at-a-time path skips such keys.
            if cache_keys and any(key is None for key in cache_keys):
                cache_keys = None
            return await super().amodel_call(*args, cache_keys=cache_keys, **kw)

        def apply_chat_template(self, chat_history, add_generation_prompt=True):
            tok = self.tokenizer
            return tok.apply_chat_template(
                chat_history,
                add_generation_prompt=add_generation_prompt,
                bos_token=tok.bos_token or "",
                eos_token=tok.eos_token or "",
            )

    return ScoringCompletions(**kwargs)
