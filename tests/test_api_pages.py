"""The built site reads well: no literal Sphinx roles, no collapsed examples, links open from disk.

The site is built once per session (``mkdocs build``, about 4 s) into a temporary folder.
"""

from __future__ import annotations

import html
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: A Sphinx role as it shows when nothing renders it (``:class:`X``` becomes ``:class:X``).
ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|data|attr|exc|obj|const):`?\w")
#: ``>>>`` lines outside an Examples section render as blockquotes nested three deep.
COLLAPSED = re.compile(r"<blockquote>(?:(?!</blockquote>).)*?&gt;&gt;&gt;", re.S)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"NO_MKDOCS_2_WARNING": "1", "PATH": str(Path(sys.executable).parent)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def pages(site: Path) -> list[Path]:
    found = sorted(p for p in site.rglob("*.html") if p.name != "404.html")
    assert len(found) > 20, "the site has fewer pages than the nav"
    return found


def visible_text(page: Path) -> str:
    """The page's text as a reader sees it, without code listings and tags."""
    text = page.read_text()
    text = re.sub(r"<pre\b.*?</pre>", " ", text, flags=re.S)
    text = re.sub(r"<(script|style)\b.*?</\1>", " ", text, flags=re.S)
    return html.unescape(re.sub(r"<[^>]+>", "", text))


def test_role_pattern_catches_a_rendered_role():
    rendered = visible_text_of("<p>see :class:<code>ClassCentroids</code> and :func:`audit`</p>")
    assert ROLE.findall(rendered) == [":class:C", ":func:`a"]
    assert not ROLE.findall(visible_text_of("<p>ratio 1:2, <code>a:b</code></p>"))


def visible_text_of(snippet: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", snippet))


def test_no_literal_sphinx_roles(site):
    bad = {}
    for page in pages(site):
        hits = ROLE.findall(visible_text(page))
        if hits:
            bad[str(page.relative_to(site))] = len(hits)
    assert not bad, f"literal Sphinx roles (page: count): {bad}"


def test_no_collapsed_examples(site):
    bad = {}
    for page in pages(site):
        hits = COLLAPSED.findall(page.read_text())
        if hits:
            bad[str(page.relative_to(site))] = len(hits)
    assert not bad, f"doctest examples rendered as nested blockquotes (page: count): {bad}"


def test_collapsed_pattern_catches_a_blockquote():
    assert COLLAPSED.search("<blockquote>\n<blockquote><p>&gt;&gt;&gt; x = 1</p>")
    assert not COLLAPSED.search('<pre><code><span class="gp">&gt;&gt;&gt; </span></code></pre>')


def test_links_open_from_disk(site):
    """Every relative link names a file that exists (a folder opens as a listing from disk)."""
    bad = []
    checked = 0
    for page in pages(site):
        for href in re.findall(r'<a\b[^>]*\bhref="([^"]*)"', page.read_text()):
            parts = urlsplit(html.unescape(href))
            if parts.scheme or parts.netloc or not parts.path:
                continue  # external, mailto, or an anchor on the same page
            checked += 1
            target = (page.parent / unquote(parts.path)).resolve()
            if parts.path.endswith("/") or target.is_dir() or not target.is_file():
                bad.append(f"{page.relative_to(site)} -> {href}")
    assert checked > 100
    assert not bad, f"{len(bad)} links do not open a file from disk, e.g. {bad[:8]}"


def test_nav_has_the_how_to_pages(site):
    index = (site / "index.html").read_text()
    for page in ("install.html", "own-model.html", "target-layer.html", "cli.html"):
        assert f'href="{page}"' in index, page
