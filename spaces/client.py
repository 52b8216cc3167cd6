"""The Space's only way to reach loradock: a small HTTP client for a loradock endpoint.

The Space deploys on its own (``requirements.txt`` holds gradio and httpx only), so this
module imports nothing from loradock: it speaks the OpenAI-compatible routes
(``/v1/models``, ``/v1/chat/completions`` with SSE streaming) and the server's read-only
registry routes (``/v1/registry/adapters``, ``/v1/registry/adapters/{org}/{name}/card``).
Every failure becomes an :class:`EndpointError` whose message a reviewer can act on.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
import yaml

DEFAULT_ENDPOINT = "http://127.0.0.1:8000"
MAX_ROWS = 500  # the server's cap on one registry listing


class EndpointError(Exception):
    """A loradock endpoint could not answer; ``str(err)`` is the message shown in the page.

    Defined here rather than in ``loradock.errors`` because the deployed Space does not
    install loradock.
    """

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.code = code


class ModelGoneError(EndpointError):
    """The endpoint no longer serves that model or adapter (HTTP 404)."""


@dataclass(frozen=True)
class ServedModel:
    """One entry of ``/v1/models``: a base model (``parent`` None) or an adapter on it."""

    id: str
    parent: str | None = None


@dataclass(frozen=True)
class AdapterRow:
    """One registry index row (the registry's ``AdapterRecord``) from ``/v1/registry/adapters``."""

    repo_id: str
    kind: str = "adapter"  # "adapter", "base" or "merge"
    base_model: str | None = None
    base_revision: str | None = None
    tasks: tuple[str, ...] = ()
    sha: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)  # "task/metric" -> value
    aliases: dict[str, str] = field(default_factory=dict)  # alias -> sha ("" when unknown)
    revisions: tuple[str, ...] = ()
    datasets: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)  # rank, peft_type, license, ...

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> AdapterRow:
        tasks = row.get("tasks")
        if tasks is None:
            tasks = [row["task"]] if row.get("task") else []
        known = {"repo_id", "id", "kind", "base_model", "base_revision", "task", "tasks", "sha"}
        known |= {"metrics", "aliases", "revisions", "datasets", "tags"}
        return cls(
            repo_id=str(row.get("repo_id") or row.get("id") or ""),
            kind=str(row.get("kind") or "adapter"),
            base_model=row.get("base_model"),
            base_revision=row.get("base_revision"),
            tasks=tuple(str(t) for t in tasks),
            sha=row.get("sha"),
            metrics={str(k): float(v) for k, v in _metrics_of(row.get("metrics")).items()},
            aliases=_aliases_of(row.get("aliases"), row.get("sha")),
            revisions=tuple(_revision_sha(r) for r in row.get("revisions") or ()),
            datasets=tuple(str(d) for d in row.get("datasets") or ()),
            tags=tuple(str(t) for t in row.get("tags") or ()),
            extra={k: v for k, v in row.items() if k not in known},
        )


@dataclass(frozen=True)
class AdapterCardView:
    """An adapter's card as the server renders it: markdown plus lineage facts."""

    repo_id: str
    markdown: str
    lineage: dict[str, Any] = field(default_factory=dict)
    sha: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)  # the card's YAML front matter


def split_card(text: str) -> tuple[dict[str, Any], str]:
    """(YAML front matter, markdown body) of a Hub README; bad YAML keeps the text whole."""
    if not text.startswith("---"):
        return {}, text
    head, sep, body = text[3:].partition("\n---")
    if not sep:
        return {}, text
    try:
        meta = yaml.safe_load(head) or {}
    except yaml.YAMLError:
        return {}, text
    if not isinstance(meta, dict):
        return {}, text
    return meta, body.partition("\n")[2].lstrip("\n")


def lineage_from_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """The lineage facts a loradock card carries in its YAML (see registry/card.py)."""
    lineage: dict[str, Any] = {}
    for key, name in (
        ("base_model", "base_model"),
        ("base_model_revision", "base_revision"),
        ("base_model_relation", "relation"),
        ("datasets", "datasets"),
        ("license", "license"),
    ):
        if meta.get(key):
            lineage[name] = meta[key]
    training = meta.get("loradock")
    if isinstance(training, dict) and training:
        lineage["training"] = training
    return lineage


@dataclass
class GenerationStats:
    """What one streamed generation cost, shown under its output."""

    model: str
    prompt_tokens: int | None = None
    completion_tokens: int = 0
    first_token_s: float | None = None
    total_s: float = 0.0
    finish_reason: str | None = None

    def summary(self) -> str:
        ttft = "n/a" if self.first_token_s is None else f"{self.first_token_s:.2f}s"
        rate = self.completion_tokens / self.total_s if self.total_s > 0 else 0.0
        prompt = "?" if self.prompt_tokens is None else str(self.prompt_tokens)
        return (
            f"{self.completion_tokens} tokens · prompt {prompt} · first token {ttft} · "
            f"total {self.total_s:.2f}s · {rate:.1f} tok/s"
        )


def _metrics_of(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return {k: v for k, v in value.items() if isinstance(v, (int, float))}
    if isinstance(value, list):  # [{"task":..., "metric":..., "value":...}]
        out = {}
        for item in value:
            if isinstance(item, dict) and isinstance(item.get("value"), (int, float)):
                out[f"{item.get('task')}/{item.get('metric')}"] = item["value"]
        return out
    return {}


def _aliases_of(value: Any, sha: str | None) -> dict[str, str]:
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):  # a bare list of names points at the row's revision
        return {str(a): str(sha or "") for a in value}
    return {}


def _revision_sha(value: Any) -> str:
    return str(value.get("sha", "")) if isinstance(value, dict) else str(value)


def _error_message(response: httpx.Response) -> tuple[str, str | None]:
    """The server's own message (OpenAI error shape or FastAPI detail) when it sent one."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:300] or response.reason_phrase, None
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            return str(err.get("message") or err), err.get("code")
        if "detail" in body:
            return str(body["detail"]), None
    return str(body)[:300], None


class LoradockClient:
    """Talks to one loradock endpoint; cheap to build, so the UI builds one per request."""

    def __init__(
        self,
        endpoint: str = DEFAULT_ENDPOINT,
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ):
        # Endpoint and key are exactly what the caller gives: the Space decides which key
        # may go where (endpoints.py), so nothing is filled in from the environment here.
        endpoint = endpoint.strip()
        if not endpoint.startswith(("http://", "https://")):
            raise EndpointError(
                f"Endpoint {endpoint!r} is not an http(s) URL: give one like {DEFAULT_ENDPOINT}"
            )
        self.endpoint = endpoint.rstrip("/").removesuffix("/v1")
        self.api_key = api_key
        self.timeout = timeout
        self._transport = transport

    def _client(self) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        return httpx.AsyncClient(
            base_url=self.endpoint,
            headers=headers,
            timeout=httpx.Timeout(self.timeout, connect=5.0),
            transport=self._transport,
            # A redirect would carry the request (and its key) to a host nobody configured.
            follow_redirects=False,
        )

    def _raise_for(self, response: httpx.Response, what: str) -> None:
        if response.is_success:
            return
        message, code = _error_message(response)
        status = response.status_code
        if status in (401, 403):
            raise EndpointError(
                f"{what}: the endpoint refused the API key (HTTP {status}: {message}). "
                "Set the key in 'Endpoint settings' or LORADOCK_API_KEY.",
                status=status,
                code=code,
            )
        if status == 404:
            raise ModelGoneError(
                f"{what}: not found on {self.endpoint} (HTTP 404: {message}). "
                "It may have been unloaded or deleted: refresh the list.",
                status=status,
                code=code,
            )
        raise EndpointError(f"{what}: HTTP {status}: {message}", status=status, code=code)

    def _unreachable(self, exc: httpx.HTTPError, what: str) -> EndpointError:
        if isinstance(exc, httpx.TimeoutException):
            return EndpointError(
                f"{what}: the endpoint {self.endpoint} did not answer within "
                f"{self.timeout:.0f}s. Is it overloaded? Try again or raise the timeout."
            )
        return EndpointError(
            f"{what}: cannot reach the loradock endpoint at {self.endpoint} "
            f"({type(exc).__name__}). Start it with `loradock serve` or fix the URL in "
            "'Endpoint settings'."
        )

    async def _get_json(self, path: str, what: str, params: dict[str, str] | None = None) -> Any:
        try:
            async with self._client() as http:
                response = await http.get(path, params=params)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc, what) from None
        self._raise_for(response, what)
        try:
            return response.json()
        except ValueError:
            raise EndpointError(
                f"{what}: the endpoint answered with something that is not JSON: "
                f"{response.text[:120]!r}. Is {self.endpoint} a loradock server?"
            ) from None

    async def list_models(self) -> list[ServedModel]:
        body = await self._get_json("/v1/models", "Listing models")
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list):
            raise EndpointError(f"Listing models: unexpected answer {str(body)[:120]!r}")
        return [ServedModel(id=str(m["id"]), parent=m.get("parent")) for m in data if "id" in m]

    async def list_adapters(
        self, *, base: str | None = None, task: str | None = None, kind: str | None = None
    ) -> list[AdapterRow]:
        """Index rows; ``kind="base"`` asks for base models' own rows (their eval results)."""
        params = {k: v for k, v in (("base", base), ("task", task), ("kind", kind)) if v}
        params["limit"] = str(MAX_ROWS)
        body = await self._get_json("/v1/registry/adapters", "Reading the registry", params)
        rows = body.get("data", body.get("adapters")) if isinstance(body, dict) else body
        if not isinstance(rows, list):
            raise EndpointError(f"Reading the registry: unexpected answer {str(body)[:120]!r}")
        return [AdapterRow.from_json(r) for r in rows if isinstance(r, dict)]

    async def adapter_card(self, repo_id: str) -> AdapterCardView:
        if repo_id.count("/") != 1 or any(not part for part in repo_id.split("/")):
            raise EndpointError(f"Adapter name {repo_id!r} is not of the form 'org/name'.")
        org, name = (quote(part, safe="") for part in repo_id.split("/"))
        path = f"/v1/registry/adapters/{org}/{name}/card"
        body = await self._get_json(path, f"Reading the card of {repo_id}")
        if not isinstance(body, dict):
            raise EndpointError(f"Reading the card of {repo_id}: unexpected answer")
        meta, markdown = split_card(str(body.get("card") or body.get("markdown") or ""))
        lineage = lineage_from_meta(meta)
        lineage.update(body.get("lineage") or {})
        for key in ("revisions", "aliases"):  # the server sends these beside the card
            if body.get(key) is not None:
                lineage[key] = body[key]
        return AdapterCardView(
            repo_id=str(body.get("repo_id") or repo_id),
            markdown=markdown,
            lineage=lineage,
            sha=body.get("sha"),
            metadata=meta,
        )

    async def stream_chat(
        self,
        model: str,
        prompt: str,
        *,
        max_tokens: int = 128,
        temperature: float = 0.0,
        stats: GenerationStats | None = None,
    ) -> AsyncIterator[str]:
        """Yield text deltas of one chat completion; fills ``stats`` as it goes."""
        stats = stats if stats is not None else GenerationStats(model=model)
        payload = {
            "model": model,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens,
            "temperature": temperature,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        what = f"Generating with {model}"
        start = time.perf_counter()
        try:
            async with (
                self._client() as http,
                http.stream("POST", "/v1/chat/completions", json=payload) as response,
            ):
                if not response.is_success:
                    await response.aread()
                    self._raise_for(response, what)
                async for data in _sse_data(response.aiter_lines()):
                    for delta in _apply_chunk(data, stats, what):
                        if stats.first_token_s is None:
                            stats.first_token_s = time.perf_counter() - start
                        yield delta
                    stats.total_s = time.perf_counter() - start
        except httpx.HTTPError as exc:
            raise self._unreachable(exc, what) from None
        stats.total_s = time.perf_counter() - start


async def _sse_data(lines: AsyncIterator[str]) -> AsyncIterator[str]:
    """The ``data:`` payloads of an SSE stream, stopping at ``[DONE]``."""
    async for line in lines:
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return
        if data:
            yield data


def _apply_chunk(data: str, stats: GenerationStats, what: str) -> Iterable[str]:
    try:
        chunk = json.loads(data)
    except ValueError:
        raise EndpointError(f"{what}: the stream sent a malformed chunk {data[:80]!r}") from None
    if "error" in chunk:  # servers report mid-stream failures as an error chunk
        err = chunk["error"]
        message = err.get("message", err) if isinstance(err, dict) else err
        raise EndpointError(f"{what}: the endpoint failed mid-stream: {message}")
    usage = chunk.get("usage")
    if isinstance(usage, dict):
        stats.prompt_tokens = usage.get("prompt_tokens", stats.prompt_tokens)
        stats.completion_tokens = usage.get("completion_tokens", stats.completion_tokens)
    deltas = []
    for choice in chunk.get("choices") or ():
        text = (choice.get("delta") or {}).get("content") or choice.get("text") or ""
        if choice.get("finish_reason"):
            stats.finish_reason = choice["finish_reason"]
        if text:
            if not isinstance(usage, dict):  # one chunk is one token until usage says otherwise
                stats.completion_tokens += 1
            deltas.append(text)
    return deltas
