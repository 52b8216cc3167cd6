"""huggingface_hub's and httpx's errors turned into loradock's, each naming the repo (and
revision), the endpoint, and what to do. The token never appears in a message."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import httpx2
from huggingface_hub.errors import (
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
)
from huggingface_hub.errors import RevisionNotFoundError as HfRevisionNotFoundError

from loradock.errors import (
    AdapterNotFoundError,
    AliasNotFoundError,
    RevisionNotFoundError,
    StoreError,
)
from loradock.registry.hf_deadline import HubDeadlineError


@contextmanager
def mapped_errors(
    endpoint: str,
    action: str,
    repo_id: str,
    revision: str | None = None,
    *,
    token_set: bool,
    missing: type[RevisionNotFoundError] = RevisionNotFoundError,
) -> Iterator[None]:
    """Raise the errors of the block as loradock errors that say what to do."""
    where = f"on {endpoint}"
    try:
        yield
    except HfRevisionNotFoundError as exc:
        if missing is AliasNotFoundError:
            raise missing(
                f"Tag {revision!r} does not exist in {repo_id!r} {where}; "
                "list the repo's aliases with `loradock registry show`."
            ) from exc
        raise missing(
            f"Revision {revision!r} not found in {repo_id!r} {where}: check the commit sha, "
            "branch or alias (list them with `loradock registry show`)."
        ) from exc
    except RepositoryNotFoundError as exc:
        error = AdapterNotFoundError(
            f"Repo {repo_id!r} not found {where}: check the name; if the repo is private, "
            "set HF_TOKEN to a token that can read it."
        )
        # Only a 404 says the repo is gone: the Hub answers 401 alike for a private repo
        # the caller may not read, and `sync` must not drop that repo's rows for it.
        error.confirmed = exc.response is not None and exc.response.status_code == 404
        raise error from exc
    except RemoteEntryNotFoundError as exc:
        raise StoreError(
            f"A file of {repo_id!r} is missing {where} (HTTP 404): {server_message(exc)}. "
            "Re-publish the repo."
        ) from exc
    except HfHubHTTPError as exc:
        raise http_error(exc, endpoint, action, repo_id, token_set=token_set) from exc
    except OfflineModeIsEnabled as exc:
        raise StoreError(
            f"Cannot {action} {repo_id!r}: HF_HUB_OFFLINE is set. Unset it to use the 'hf' "
            "store, or use the local store (LORADOCK_STORE=local)."
        ) from exc
    except (HubDeadlineError, httpx2.TimeoutException) as exc:
        within = f" within {exc.limit_s:g} s" if isinstance(exc, HubDeadlineError) else ""
        raise StoreError(
            f"Cannot {action} {repo_id!r}: {endpoint} did not answer{within} "
            f"({type(exc).__name__}). The Hub is slow or unreachable: retry later, or use the "
            "local store (LORADOCK_STORE=local)."
        ) from exc
    except (httpx2.TransportError, LocalEntryNotFoundError) as exc:
        raise StoreError(
            f"Cannot {action} {repo_id!r}: {endpoint} is unreachable ({type(exc).__name__}). "
            "Check HF_ENDPOINT and the network, or use the local store (LORADOCK_STORE=local)."
        ) from exc


def http_error(
    exc: HfHubHTTPError, endpoint: str, action: str, repo_id: str, *, token_set: bool
) -> StoreError:
    status = exc.response.status_code if exc.response is not None else None
    if status == 401:
        hint = (
            "the token was rejected: set HF_TOKEN to a valid token"
            if token_set
            else "no token was sent: set HF_TOKEN to a token with access"
        )
    elif status == 403:
        hint = "the token lacks permission: use a token with write access to that namespace"
    elif status == 409:
        hint = "it conflicts with what the Hub holds (already exists?)"
    elif status == 429:
        hint = "the Hub is rate limiting this client: retry later"
    elif status is not None and status >= 500:
        hint = "the Hub failed: retry later"
    else:
        hint = "see the server's message"
    return StoreError(
        f"Cannot {action} {repo_id!r} on {endpoint} (HTTP {status}): {hint}. "
        f"Server said: {server_message(exc)}"
    )


def server_message(exc: HfHubHTTPError) -> str:
    if exc.server_message:
        return exc.server_message.strip()
    return str(exc).splitlines()[0]


__all__ = ["http_error", "mapped_errors", "server_message"]
