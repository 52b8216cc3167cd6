"""The Browse tab's handlers: one adapter's card (with the files it links), lineage,
revisions, and two revisions' metrics side by side.

A mixin of ``SpaceApp`` (app.py), which supplies ``client`` and ``_rows``.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

try:
    from .browse import (
        inline_images,
        lineage_markdown,
        linked_files,
        revision_choices,
        revision_metrics,
        revisions_frame,
    )
    from .client import EndpointError
    from .markup import md_text
    from .notices import warn
    from .records import AdapterCardView
except ImportError:  # run as a Space: app.py's folder is on sys.path, not the package
    from browse import (  # type: ignore[no-redef]
        inline_images,
        lineage_markdown,
        linked_files,
        revision_choices,
        revision_metrics,
        revisions_frame,
    )
    from client import EndpointError  # type: ignore[no-redef]
    from markup import md_text  # type: ignore[no-redef]
    from notices import warn  # type: ignore[no-redef]
    from records import AdapterCardView  # type: ignore[no-redef]

# Shown inline as data URLs; SVG is left out (it is a document, not a picture).
IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")


class BrowseTab:
    client: Any
    _rows: Any

    async def _card_files(self, client, card: AdapterCardView) -> dict[str, Any]:
        """Each image the card links, fetched at the card's own revision, or why not."""
        files: dict[str, Any] = {}
        for path in linked_files(card.markdown):
            try:
                data, media = await client.card_file(card.repo_id, path, revision=card.sha)
            except EndpointError as exc:
                files[path] = f"not available: {exc}"
                continue
            files[path] = (data, media) if media in IMAGE_TYPES else f"not an image ({media})"
        return files

    async def browse(self, endpoint, api_key, repo_id, base, task, *, announce: bool = True):
        """The card, lineage, revisions and revision picks of one adapter.

        Failures are written where the card would be; ``announce`` also raises them to the
        status line, which only a reviewer's own pick should do (not a background reload).
        """
        keep = gr.update()
        if not repo_id:
            return "Pick an adapter.", "", None, keep, keep, None, keep, keep
        try:
            client = self.client(endpoint, api_key)
            card = await client.adapter_card(repo_id)
            rows = await self._rows(client, base or "", task)
            files = await self._card_files(client, card)
        except EndpointError as exc:
            status = warn(str(exc)) if announce else keep
            return f"⚠️ {md_text(exc)}", "", None, keep, keep, None, keep, status
        row = next((r for r in rows if r.repo_id == repo_id), None)
        # The card itself is shown as the card (Gradio sanitises its HTML); every value
        # lifted out of it into lineage tables is escaped there.
        body = inline_images(card.markdown, files) or "_This adapter has no model card._"
        shas = revision_choices(card)
        left, right = (shas[1], shas[0]) if len(shas) > 1 else (shas[:1] * 2 or [None, None])
        # The status line keeps what the reviewer did last; a card loading is no news.
        return (
            body,
            lineage_markdown(row, card),
            revisions_frame(row, card),
            gr.update(choices=shas, value=left),
            gr.update(choices=shas, value=right),
            revision_metrics(card, left, right),
            card,
            keep,
        )

    async def browse_quietly(self, endpoint, api_key, repo_id, base, task):
        return await self.browse(endpoint, api_key, repo_id, base, task, announce=False)

    def compare_revisions(self, card: AdapterCardView | None, left: str, right: str):
        """The metrics of the two picked revisions (from the card already loaded)."""
        return revision_metrics(card, left, right) if card else None
