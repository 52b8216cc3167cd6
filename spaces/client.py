"""The Space's only way to reach loradock: a small HTTP client for a loradock endpoint.

The Space deploys on its own (from its own ``requirements.txt``), so this module
imports nothing from loradock: it speaks the OpenAI-compatible routes
(``/v1/models``, ``/v1/chat/completions`` with SSE streaming) and the server's read-only
registry routes (``/v1/registry/adapters``, ``/v1/registry/adapters/{org}/{name}/card``
and ``.../files/{path}`` for the files a card links).
Every failure becomes an :class:`EndpointError` whose message a reviewer can act on.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any
from urllib.parse import quote

import httpx

try:
    from .records import (
        AdapterCardView,
        AdapterRow,
        GenerationStats,
        ServedModel,
        lineage_from_meta,
        split_card,
    )
except ImportError:  # run as a Space: app.py's folder is on sys.path, not the package
    from records import (  # type: ignore[no-redef]
        AdapterCardView,
        AdapterRow,
        GenerationStats,
        ServedModel,
        lineage_from_meta,
        split_card,
    )

DEFAULT_ENDPOINT = "http://127.0.0.1:8000"
MAX_ROWS = 500  # the server's cap on one registry listing
MAX_CARD_FILE = 5 * 2**20  # a card image is inlined into the page: keep it small


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


def _repo_parts(repo_id: str) -> tuple[str, str]:
    """(org, name) of ``repo_id``, each quoted for a URL path."""
    if repo_id.count("/") != 1 or any(not part for part in repo_id.split("/")):
        raise EndpointError(f"Adapter name {repo_id!r} is not of the form 'org/name'.")
    org, name = repo_id.split("/")
    return quote(org, safe=""), quote(name, safe="")


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
        org, name = _repo_parts(repo_id)
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

    async def card_file(
        self, repo_id: str, path: str, *, revision: str | None = None
    ) -> tuple[bytes, str]:
        """(content, media type) of a file the card links (``training_loss.png``), read
        through ``/v1/registry/adapters/{org}/{name}/files/{path}?revision=``."""
        if ".." in path.split("/") or path.startswith("/") or "://" in path:
            raise EndpointError(f"Card file {path!r} is not a file of the repo.")
        org, name = _repo_parts(repo_id)
        route = f"/v1/registry/adapters/{org}/{name}/files/{quote(path)}"
        params = {"revision": revision} if revision else None
        what = f"Reading {path} of {repo_id}"
        try:
            async with self._client() as http:
                response = await http.get(route, params=params)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc, what) from None
        if response.status_code == 404:  # not a model gone: a file, or a route, missing
            raise EndpointError(
                f"{what}: the endpoint has no such file at this revision, or does not serve "
                "card files (HTTP 404)",
                status=404,
            )
        self._raise_for(response, what)
        if len(response.content) > MAX_CARD_FILE:
            raise EndpointError(f"{what}: {len(response.content)} bytes is over the page's limit")
        media = response.headers.get("content-type", "").split(";")[0].strip()
        return response.content, media or "application/octet-stream"

    async def stream_chat(
        self,
        model: str,
        prompt: str,
        *,
        max_tokens: int = 128,
        temperature: float = 0.0,
        seed: int | None = None,
        stats: GenerationStats | None = None,
    ) -> AsyncIterator[str]:
        """Yield text deltas of one chat completion; fills ``stats`` as it goes.

        ``seed`` makes a sampled answer (``temperature`` > 0) reproducible.
        """
        stats = stats if stats is not None else GenerationStats(model=model)
        payload: dict[str, Any] = {
            "model": model,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens,
            "temperature": temperature,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if seed is not None:
            payload["seed"] = seed
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
