"""MkDocs hook: links between the repository's Markdown files work on the site too.

The pages are written to be read in the repository as well (README.md at the
root, docs/*.md, examples/*/README.md), so they link to repository paths: the
README to ``docs/yaml.md``, the tutorial to ``../examples/payment``. On the
site the README is ``index.md`` and each example's README is
``examples/NAME.md``; this hook points such links there. A link to any other
repository file (a script, a YAML file) has no page on the site, so the site
shows its text without a link rather than a link that leads nowhere.
"""

from __future__ import annotations

import posixpath
import re
from typing import Any

from mkdocs.structure.pages import Page

# [text](target) with a relative target; images (![...]) are left alone.
_LINK = re.compile(r"(?<!!)\[(?P<text>[^\]]+)\]\((?P<target>[^)\s#:]+)(?P<anchor>#[^)\s]*)?\)")
_EXAMPLE = re.compile(r"^examples/(?P<name>[^/]+)(?:/README\.md)?/?$")


def _site_path(repo_path: str) -> str | None:
    """The page (relative to docs/) that shows a repository path, or None."""
    if repo_path.startswith("docs/"):
        return repo_path.removeprefix("docs/")
    if repo_path == "README.md":
        return "index.md"
    if repo_path == "CHANGELOG.md":
        return "changelog.md"
    example = _EXAMPLE.match(repo_path)
    if example:
        return f"examples/{example['name']}.md"
    return None


def on_page_markdown(markdown: str, /, *, page: Page, **_: Any) -> str:
    """Point each link to a repository path at the page that shows it on the site."""
    page_dir = posixpath.dirname(page.file.src_uri)

    def relink(link: re.Match[str]) -> str:
        target = link["target"]
        repo_path = posixpath.normpath(posixpath.join("docs", page_dir, target))
        if repo_path.startswith("docs/"):
            return link[0]  # a page or file of the site: MkDocs checks it
        site = _site_path(repo_path)
        if site is None:
            return link["text"]
        relative = posixpath.relpath(site, page_dir or ".")
        return f"[{link['text']}]({relative}{link['anchor'] or ''})"

    return _LINK.sub(relink, markdown)
