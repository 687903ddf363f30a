"""Markdown tables and a small report builder that writes Markdown and self-contained HTML.

The HTML file needs nothing but itself: figures are embedded as base64 ``data:`` URIs (RFC 2397),
the style sheet is inline, and there are no scripts, web fonts or links to other files, so it can
be mailed, archived or opened from disk without a network. The Markdown file is the same document
for reading on a code host: tables in GitHub Markdown, figures as links relative to the Markdown
file's folder.

Examples:
    >>> import tempfile
    >>> from pathlib import Path
    >>> rep = Report("Run 1")
    >>> rep.add_heading("Accuracy")
    >>> rep.add_table(["model", "acc"], [["semi-hard", "0.91"]])
    >>> with tempfile.TemporaryDirectory() as d:
    ...     md = rep.write_markdown(Path(d) / "report.md").read_text()
    >>> print(md)
    # Run 1
    <BLANKLINE>
    ## Accuracy
    <BLANKLINE>
    | model | acc |
    | --- | --- |
    | semi-hard | 0.91 |
    <BLANKLINE>
"""

from __future__ import annotations

import base64
import html
import os
import re
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from embedcam.atomic import atomic_write_bytes, staged_path
from embedcam.errors import ConfigurationError, DataError, EmbedcamValueError, ShapeError

__all__ = ["markdown_table", "Report"]

_ALIGN_RULE = {"left": ":---", "right": "---:", "center": ":---:", None: "---"}
_ALIGN_ALIASES = {"l": "left", "r": "right", "c": "center", "centre": "center"}

# magic numbers of the image formats a browser shows from a data URI
_MIME_BY_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
)


def _normalise_align(align: Sequence[str | None] | None, n_cols: int) -> list[str | None]:
    """Return one of ``left``/``right``/``center``/``None`` per column, validating ``align``."""
    if align is None:
        return [None] * n_cols
    if isinstance(align, str):
        raise EmbedcamValueError(
            f"align must be a sequence with one entry per column, got the string {align!r}; "
            f"e.g. ['left'] + ['right'] * {max(n_cols - 1, 0)}"
        )
    if len(align) != n_cols:
        raise ShapeError(f"align has {len(align)} entries for {n_cols} columns; give one each")
    out: list[str | None] = []
    for i, a in enumerate(align):
        key = _ALIGN_ALIASES.get(a, a) if isinstance(a, str) else a
        if key not in _ALIGN_RULE:
            raise ConfigurationError(
                f"align[{i}] = {a!r} is not an alignment; use 'left', 'right', 'center' or None"
            )
        out.append(key)
    return out


def _check_rows(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> list[list[str]]:
    """Validate a table and return its body as strings (``str()`` of each cell)."""
    if isinstance(headers, str) or len(headers) == 0:
        raise EmbedcamValueError(
            f"headers must be a non-empty sequence of column names, got {headers!r}"
        )
    n = len(headers)
    body: list[list[str]] = []
    for i, row in enumerate(rows):
        if isinstance(row, str) or not isinstance(row, Sequence):
            raise EmbedcamValueError(
                f"row {i} must be a sequence of {n} cells, got {type(row).__name__}"
            )
        if len(row) != n:
            raise ShapeError(
                f"row {i} has {len(row)} cells but there are {n} headers {list(headers)}; "
                "pad missing values with '' "
            )
        body.append([str(c) for c in row])
    return body


def _md_cell(text: object) -> str:
    """One cell of a GitHub Markdown table: inline text escaped, newlines as ``<br>``."""
    lines = str(text).replace("\r\n", "\n").split("\n")
    return "<br>".join(_md_inline(line, table=True) for line in lines)


def markdown_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[object]],
    align: Sequence[str | None] | None = None,
) -> str:
    r"""Format a GitHub-Markdown table.

    Cells are written with ``str()`` (format floats before passing them), ``|`` becomes ``\|`` and
    a newline becomes ``<br>`` so a cell never breaks the table; cells are text with the inline
    markup of [`Report`][embedcam.report.document.Report] (``**bold**``, `` `code` ``), everything
    else (HTML tags, ``*``, ``_``) is escaped to read as written. The result ends with a newline.

    Args:
        headers: Column names, ``C`` of them.
        rows: Rows of exactly ``C`` cells each.
        align: ``None`` (default alignment) or one entry per column: ``"left"``, ``"right"``,
            ``"center"`` (or ``"l"``/``"r"``/``"c"``) or ``None``.

    Returns:
        The table as Markdown text, one line per row.

    Raises:
        EmbedcamValueError: If ``headers`` is empty or a row is not a sequence.
        ShapeError: If a row (named by its index) or ``align`` has the wrong number of entries.
        ConfigurationError: If an ``align`` entry is unknown.

    Examples:
        >>> print(markdown_table(["loss", "acc"], [["triplet", "0.80"], ["a|b", 1]], ["l", "r"]))
        | loss | acc |
        | :--- | ---: |
        | triplet | 0.80 |
        | a\|b | 1 |
        <BLANKLINE>
    """
    body = _check_rows(headers, rows)
    rules = [_ALIGN_RULE[a] for a in _normalise_align(align, len(headers))]
    lines = ["| " + " | ".join(_md_cell(h) for h in headers) + " |"]
    lines.append("| " + " | ".join(rules) + " |")
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in body]
    return "\n".join(lines) + "\n"


# inline markup: `code` and **bold**; a backslash before ASCII punctuation makes it literal
_CODE_SPAN = re.compile(r"(?<!\\)(`[^`]+`)")
# a Markdown list item: "- ", "* " or "+ " (bullets) or "1. " / "1) " (numbered)
_LIST_ITEM = re.compile(r"^\s{0,3}(?:([-*+])|(\d{1,9})[.)])\s+(\S.*)$")
_BOLD = re.compile(r"(?<!\\)\*\*(.+?)(?<!\\)\*\*")
_PUNCT = frozenset("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
# "<" that would open an HTML tag, comment or autolink; "&" that would start an entity
_HTML_OPEN = re.compile(r"<(?=[A-Za-z/!?])")
_ENTITY = re.compile(r"&(?=#?[A-Za-z0-9]+;)")


def _split_escapes(text: str) -> list[tuple[str, bool]]:
    r"""``text`` as ``(char, escaped)`` pairs: ``\X`` (X ASCII punctuation) is a literal X."""
    out: list[tuple[str, bool]] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text) and text[i + 1] in _PUNCT:
            out.append((text[i + 1], True))
            i += 2
        else:
            out.append((c, False))
            i += 1
    return out


def _unescape(text: str) -> str:
    r"""Plain text with the backslash escapes resolved (``\*`` -> ``*``)."""
    return "".join(c for c, _ in _split_escapes(text))


def _md_escape(text: str, *, keep_escapes: bool = True) -> str:
    r"""Plain text as Markdown that renders as that text: no HTML, emphasis, links or tables.

    ``<`` opening a tag and ``&`` starting an entity become character references; ``*``, ``_``
    (outside a word), ``~``, ``|``, `` ` ``, ``\``, a ``]`` before ``(`` or ``[`` and a ``#``
    or ``>`` that starts the text are backslash-escaped. With ``keep_escapes`` the input's own
    backslash escapes are kept (they are markup); without, every backslash is literal.
    """
    pairs = _split_escapes(text) if keep_escapes else [(c, False) for c in text]
    chars = [c for c, _ in pairs]
    out: list[str] = []
    for i, (c, escaped) in enumerate(pairs):
        prev = chars[i - 1] if i else ""
        nxt = chars[i + 1] if i + 1 < len(chars) else ""
        if c == "<" and _HTML_OPEN.match("<" + nxt):
            out.append("&lt;")
        elif c == "&" and _ENTITY.match("".join(chars[i : i + 40])):
            out.append("&amp;")
        elif escaped or c in "*~|`\\":
            out.append("\\" + c)
        elif c == "_" and not (prev.isalnum() and nxt.isalnum()):
            out.append("\\_")
        elif c == "]" and nxt in "([" and nxt:
            out.append("\\]")
        elif c in "#>" and not "".join(chars[:i]).strip():
            out.append("\\" + c)
        else:
            out.append(c)
    return "".join(out)


def _literal(text: object) -> str:
    r"""Escape ``text`` for a `Report`'s inline markup: it is shown exactly as written.

    A backslash goes before every ``\``, ``*`` and `` ` ``, so that a name like ``**x**`` or
    ``a`b`` is neither bold nor code; insert names, paths and other user text with it.

    Args:
        text: Any text (``str()`` of other objects).

    Returns:
        The escaped text.

    Examples:
        >>> _literal("**x**")
        '\\*\\*x\\*\\*'
    """
    return re.sub(r"([\\*`])", r"\\\1", str(text))


def _md_inline(text: str, *, table: bool = False) -> str:
    """Paragraph text as Markdown: `` `code` `` and ``**bold**`` kept, everything else escaped."""
    parts = []
    for i, piece in enumerate(_CODE_SPAN.split(text)):
        if i % 2 == 1:
            parts.append(piece.replace("|", "\\|") if table else piece)
            continue
        pos = 0
        for m in _BOLD.finditer(piece):
            parts.append(_md_escape(piece[pos : m.start()]))
            parts.append(f"**{_md_escape(m.group(1))}**")
            pos = m.end()
        parts.append(_md_escape(piece[pos:]))
    return "".join(parts)


def _inline_html(text: str) -> str:
    """HTML-escape ``text`` and render ``**bold**`` and `` `code` `` spans."""
    parts = []
    for i, piece in enumerate(_CODE_SPAN.split(text)):
        if i % 2 == 1:
            parts.append(f"<code>{html.escape(piece[1:-1])}</code>")
            continue
        pos = 0
        for m in _BOLD.finditer(piece):
            parts.append(html.escape(_unescape(piece[pos : m.start()])))
            parts.append(f"<strong>{html.escape(_unescape(m.group(1)))}</strong>")
            pos = m.end()
        parts.append(html.escape(_unescape(piece[pos:])))
    return "".join(parts)


def _list_items(text: str) -> tuple[bool, int, list[str]] | None:
    """Parse ``text`` as a Markdown list: ``(ordered, first number, items)``, or ``None``.

    The first line must start a list item (``- x``, ``* x``, ``+ x``, ``1. x``, ``1) x``); a line
    that starts no item continues the item above. Items are whitespace-normalised.
    """
    lines = [line for line in str(text).splitlines() if line.strip()]
    if not lines:
        return None
    first = _LIST_ITEM.match(lines[0])
    if first is None:
        return None
    ordered = first.group(2) is not None
    start = int(first.group(2)) if ordered else 1
    items: list[str] = []
    for line in lines:
        m = _LIST_ITEM.match(line)
        if m is not None and (m.group(2) is not None) == ordered:
            items.append(m.group(3))
        else:
            items[-1] += " " + line
    return ordered, start, [" ".join(item.split()) for item in items]


def _image_mime(data: bytes, path: Path) -> str:
    for magic, mime in _MIME_BY_MAGIC:
        if data.startswith(magic):
            return mime
    raise DataError(
        f"figure {str(path)!r} is neither a PNG nor a JPEG file; write figures with image_grid "
        "or save them as PNG"
    )


def _read_figure(path: Path) -> bytes:
    try:
        return staged_path(path).read_bytes()
    except FileNotFoundError as err:
        raise DataError(
            f"figure file {str(path)!r} does not exist (any more); write it before the report"
        ) from err
    except OSError as err:
        raise DataError(f"figure file {str(path)!r} cannot be read: {err}") from err


@dataclass(frozen=True)
class _Heading:
    text: str
    level: int


@dataclass(frozen=True)
class _Paragraph:
    text: str


@dataclass(frozen=True)
class _List:
    items: tuple[str, ...]
    ordered: bool
    start: int = 1


@dataclass(frozen=True)
class _Table:
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    caption: str | None
    align: tuple[str | None, ...]


@dataclass(frozen=True)
class _Figure:
    path: Path
    caption: str | None


@dataclass(frozen=True)
class _Preformatted:
    text: str


_Block = _Heading | _Paragraph | _List | _Table | _Figure | _Preformatted

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
  max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; line-height: 1.5; }
h1, h2, h3, h4, h5, h6 { line-height: 1.25; }
h1 { border-bottom: 2px solid #ddd; padding-bottom: .3em; }
h2 { border-bottom: 1px solid #eee; padding-bottom: .2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 1em 0; font-variant-numeric: tabular-nums; }
caption { caption-side: top; text-align: left; font-weight: 600; padding-bottom: .4em; }
th, td { border: 1px solid #ccc; padding: .3em .7em; vertical-align: top; }
th { background: #f3f3f3; }
tbody tr:nth-child(even) { background: #fafafa; }
figure { margin: 1.2em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: .92em; margin-top: .3em; }
pre { background: #f6f8fa; padding: .8em; overflow-x: auto; font-size: .9em; }
code { background: #f3f3f3; padding: 0 .2em; border-radius: 3px; }
pre code { background: none; padding: 0; }
""".strip()


class Report:
    r"""A document builder: headings, paragraphs, lists, tables, figures and preformatted text.

    Blocks are kept in the order they are added and written by
    [`write_markdown`][embedcam.report.document.Report.write_markdown] (tables as GitHub Markdown,
    figures as relative links) or [`write_html`][embedcam.report.document.Report.write_html] (one
    self-contained file: inline CSS, figures embedded as base64 ``data:`` URIs, no scripts, fonts or
    external links). The report title is the level-1 heading and the HTML ``<title>``. Paragraph
    text is plain text (HTML-escaped) with two bits of inline markup: ``**bold**`` and `` `code` ``;
    a backslash before ASCII punctuation makes it literal (``\*\*x\*\*`` is ``**x**``, not bold). In
    the Markdown everything else is escaped so that it reads as written (``<tag>``, ``*x*``,
    ``a|b``, ``[a](b)`` are no HTML, emphasis, table cell or link); headings and the title are
    literal text without markup. A list is added with
    [`add_list`][embedcam.report.document.Report.add_list]; a paragraph written as a Markdown list
    (``"- a"``, ``"1. a"``, one item per line) is rendered as one too, and consecutive list items of
    the same kind form one list (``<ul>``/``<ol>`` in HTML, a tight list in Markdown).

    Args:
        title: The document title.

    Raises:
        EmbedcamValueError: If ``title`` is not a non-empty string.

    Examples:
        >>> rep = Report("SKU benchmark")
        >>> rep.add_paragraph("Semi-hard mining looks at the **object** more often.")
        >>> len(rep)
        1
    """

    def __init__(self, title: str) -> None:
        if not isinstance(title, str) or not title.strip():
            raise EmbedcamValueError(f"title must be a non-empty string, got {title!r}")
        self.title = title
        self._blocks: list[_Block] = []

    def __len__(self) -> int:
        """Number of blocks added so far (the title is not a block)."""
        return len(self._blocks)

    def add_heading(self, text: str, level: int = 2) -> None:
        """Add a section heading.

        Args:
            text: Heading text (plain text).
            level: 1 to 6; 1 is the size of the report title, so sections usually use 2.

        Raises:
            EmbedcamValueError: If ``level`` is not an integer in ``[1, 6]``.
        """
        if isinstance(level, bool) or not isinstance(level, int) or not 1 <= level <= 6:
            raise EmbedcamValueError(f"heading level must be an integer 1-6, got {level!r}")
        self._blocks.append(_Heading(" ".join(str(text).split()), level))

    def add_paragraph(self, text: str) -> None:
        """Add a paragraph of plain text, with optional ``**bold**`` and `` `code` `` spans.

        Args:
            text: The paragraph; line breaks inside it are kept as spaces by both writers.
        """
        self._blocks.append(_Paragraph(str(text)))

    def add_list(self, items: Sequence[str], *, ordered: bool = False) -> None:
        """Add a bulleted (or numbered) list; each item is a line of paragraph text.

        Args:
            items: The items (plain text with optional ``**bold**`` and `` `code` `` spans).
            ordered: Number the items (``<ol>``) instead of bulleting them (``<ul>``).

        Raises:
            EmbedcamValueError: If ``items`` is a string rather than a sequence of strings.

        Examples:
            >>> rep = Report("r")
            >>> rep.add_list(["input 32 px", "2 epochs"])
            >>> print(rep.to_markdown("."))
            # r
            <BLANKLINE>
            - input 32 px
            - 2 epochs
            <BLANKLINE>
        """
        if isinstance(items, (str, bytes)):
            raise EmbedcamValueError(
                f"items must be a sequence of strings, one per item, got the string {items!r}"
            )
        self._blocks.append(_List(tuple(" ".join(str(i).split()) for i in items), bool(ordered)))

    @staticmethod
    def _as_list(block: _Block) -> _List | None:
        """The list a block renders as: a list block, a paragraph written as one, or ``None``."""
        if isinstance(block, _List):
            return block
        if isinstance(block, _Paragraph):
            parsed = _list_items(block.text)
            if parsed is not None:
                ordered, start, items = parsed
                return _List(tuple(items), ordered, start)
        return None

    def _merged_blocks(self) -> list[_Block]:
        """The blocks with consecutive lists of the same kind merged into one list."""
        out: list[_Block] = []
        for block in self._blocks:
            lst = self._as_list(block)
            if lst is None:
                out.append(block)
                continue
            prev = out[-1] if out else None
            if isinstance(prev, _List) and prev.ordered == lst.ordered:
                out[-1] = _List(prev.items + lst.items, prev.ordered, prev.start)
            else:
                out.append(lst)
        return out

    def add_table(
        self,
        headers: Sequence[str],
        rows: Sequence[Sequence[object]],
        caption: str | None = None,
        *,
        align: Sequence[str | None] | None = None,
    ) -> None:
        """Add a table; cells are converted with ``str()`` now (format floats before).

        Cells are plain text with the paragraphs' inline markup (``**bold**``, `` `code` ``),
        rendered in HTML as a Markdown viewer renders it in the Markdown table.

        Args:
            headers: Column names, ``C`` of them.
            rows: Rows of exactly ``C`` cells each.
            caption: Text shown above the table, or ``None``.
            align: Per-column alignment as in
                [`markdown_table`][embedcam.report.document.markdown_table].

        Raises:
            EmbedcamValueError: If ``headers`` is empty or a row is not a sequence.
            ShapeError: If a row (named by its index) or ``align`` has the wrong length.
            ConfigurationError: If an ``align`` entry is unknown.
        """
        body = _check_rows(headers, rows)
        aligns = _normalise_align(align, len(headers))
        self._blocks.append(
            _Table(
                tuple(str(h) for h in headers),
                tuple(tuple(r) for r in body),
                caption,
                tuple(aligns),
            )
        )

    def add_figure(self, path: str | Path, caption: str | None = None) -> None:
        """Add a figure file (PNG or JPEG), e.g. one written by `image_grid`.

        The file is read when the report is written, so it may be regenerated in between; it
        must exist now and then.

        Args:
            path: The image file.
            caption: Text shown below the figure (and used as its alt text), or ``None``.

        Raises:
            DataError: If the file does not exist (the message names it).
        """
        p = Path(path).resolve()
        if not staged_path(p).is_file():
            raise DataError(
                f"figure file {str(path)!r} does not exist; write it (e.g. with image_grid) "
                "before adding it to the report"
            )
        self._blocks.append(_Figure(p, caption))

    def add_preformatted(self, text: str) -> None:
        """Add monospaced text kept exactly as given (a log excerpt, a config, a rich table).

        Args:
            text: The text; whitespace and line breaks are preserved.
        """
        self._blocks.append(_Preformatted(str(text)))

    def to_markdown(self, base_dir: str | Path) -> str:
        """Render the report as Markdown with figure links relative to ``base_dir``.

        Args:
            base_dir: The folder the Markdown file will live in.

        Returns:
            The Markdown text.
        """
        base = Path(base_dir).resolve()
        out = [f"# {_md_escape(' '.join(self.title.split()), keep_escapes=False)}"]
        for block in self._merged_blocks():
            if isinstance(block, _Heading):
                out.append(f"{'#' * block.level} {_md_escape(block.text, keep_escapes=False)}")
            elif isinstance(block, _Paragraph):
                out.append(_md_inline(" ".join(block.text.split())))
            elif isinstance(block, _List):
                if not block.items:
                    continue
                out.append(
                    "\n".join(
                        (f"{block.start + k}. " if block.ordered else "- ") + _md_inline(item)
                        for k, item in enumerate(block.items)
                    )
                )
            elif isinstance(block, _Table):
                table = markdown_table(block.headers, block.rows, block.align).rstrip("\n")
                caption = _md_inline(" ".join(block.caption.split())) if block.caption else ""
                out.append(f"**{caption}**\n\n{table}" if caption else table)
            elif isinstance(block, _Figure):
                out.append(self._markdown_figure(block, base))
            else:
                longest = max((len(m) for m in re.findall(r"`+", block.text)), default=0)
                fence = "`" * max(3, longest + 1)
                out.append(f"{fence}text\n{block.text.rstrip(chr(10))}\n{fence}")
        return "\n\n".join(out) + "\n"

    @staticmethod
    def _markdown_figure(block: _Figure, base: Path) -> str:
        try:
            target = Path(os.path.relpath(block.path, base)).as_posix()
        except ValueError:  # another drive on Windows: no relative path exists
            target = block.path.as_uri()
        link = urllib.parse.quote(target, safe="/:.-_~")
        alt = _unescape(block.caption) if block.caption else block.path.stem
        alt = _md_escape(
            " ".join(alt.replace("[", "(").replace("]", ")").split()), keep_escapes=False
        )
        text = f"![{alt}]({link})"
        return (
            f"{text}\n\n*{_md_inline(' '.join(block.caption.split()))}*" if block.caption else text
        )

    def to_html(self) -> str:
        """Render the report as one self-contained HTML document (figures embedded).

        Returns:
            The HTML text.

        Raises:
            DataError: If a figure file is missing or is neither PNG nor JPEG.
        """
        esc = html.escape
        body = [f"<h1>{esc(self.title)}</h1>"]
        for block in self._merged_blocks():
            if isinstance(block, _Heading):
                body.append(f"<h{block.level}>{esc(block.text)}</h{block.level}>")
            elif isinstance(block, _Paragraph):
                body.append(f"<p>{_inline_html(' '.join(block.text.split()))}</p>")
            elif isinstance(block, _List):
                if not block.items:
                    continue
                tag = "ol" if block.ordered else "ul"
                start = f' start="{block.start}"' if block.ordered and block.start != 1 else ""
                items = "\n".join(f"<li>{_inline_html(item)}</li>" for item in block.items)
                body.append(f"<{tag}{start}>\n{items}\n</{tag}>")
            elif isinstance(block, _Table):
                body.append(self._html_table(block))
            elif isinstance(block, _Figure):
                data = _read_figure(block.path)
                mime = _image_mime(data, block.path)
                payload = base64.b64encode(data).decode("ascii")
                alt = esc(_unescape(block.caption) if block.caption else block.path.stem)
                cap = (
                    f"\n<figcaption>{_inline_html(block.caption)}</figcaption>"
                    if block.caption
                    else ""
                )
                body.append(
                    f'<figure>\n<img alt="{alt}" src="data:{mime};base64,{payload}">'
                    f"{cap}\n</figure>"
                )
            else:
                body.append(f"<pre><code>{esc(block.text)}</code></pre>")
        return (
            "<!DOCTYPE html>\n"
            '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{esc(self.title)}</title>\n<style>\n{_CSS}\n</style>\n</head>\n<body>\n"
            + "\n".join(body)
            + "\n</body>\n</html>\n"
        )

    @staticmethod
    def _html_table(block: _Table) -> str:
        def cell(tag: str, text: str, align: str | None) -> str:
            style = f' style="text-align: {align}"' if align else ""
            # the same inline markup as paragraphs, as a Markdown viewer renders in a cell
            inner = "<br>".join(_inline_html(line) for line in text.splitlines()) if text else ""
            return f"<{tag}{style}>{inner}</{tag}>"

        parts = ["<table>"]
        if block.caption:
            parts.append(f"<caption>{_inline_html(block.caption)}</caption>")
        parts.append(
            "<thead><tr>"
            + "".join(cell("th", h, a) for h, a in zip(block.headers, block.align))
            + "</tr></thead>"
        )
        parts.append("<tbody>")
        for row in block.rows:
            parts.append(
                "<tr>" + "".join(cell("td", c, a) for c, a in zip(row, block.align)) + "</tr>"
            )
        parts.append("</tbody>\n</table>")
        return "\n".join(parts)

    def write_markdown(self, path: str | Path) -> Path:
        """Write the report as Markdown, atomically; figures are linked relative to its folder.

        Args:
            path: The ``.md`` file to write; its folder is created when missing.

        Returns:
            The path written.

        Raises:
            DataError: If a figure file no longer exists.
        """
        path = Path(path)
        for block in self._blocks:
            if isinstance(block, _Figure) and not staged_path(block.path).is_file():
                raise DataError(
                    f"figure file {str(block.path)!r} does not exist any more; the Markdown "
                    "would link to nothing - rewrite the figure first"
                )
        atomic_write_bytes(path, self.to_markdown(path.parent).encode("utf-8"))
        return path

    def write_html(self, path: str | Path) -> Path:
        """Write the report as one self-contained HTML file, atomically.

        Args:
            path: The ``.html`` file to write; its folder is created when missing.

        Returns:
            The path written.

        Raises:
            DataError: If a figure file is missing or is neither PNG nor JPEG.
        """
        path = Path(path)
        atomic_write_bytes(path, self.to_html().encode("utf-8"))
        return path
