"""Tests for embedcam.report: Markdown tables, the report writers and figure grids."""

from __future__ import annotations

import base64
import gc
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import embedcam as ec
from embedcam.errors import ConfigurationError, DataError, EmbedcamValueError, ShapeError
from embedcam.report import GridCell, Report, image_grid, markdown_table

# ---------------------------------------------------------------- markdown_table


def test_markdown_table_exact_text_with_escaping_and_alignment():
    text = markdown_table(
        ["loss", "acc", "note"],
        [["triplet", "0.80", "a|b"], ["semi-hard", 7, "two\nlines"]],
        align=["left", "right", "center"],
    )
    assert text == (
        "| loss | acc | note |\n"
        "| :--- | ---: | :---: |\n"
        "| triplet | 0.80 | a\\|b |\n"
        "| semi-hard | 7 | two<br>lines |\n"
    )


def test_markdown_table_default_alignment_aliases_and_str_of_cells():
    assert markdown_table(["a", "b"], [[None, 1.5]]) == "| a | b |\n| --- | --- |\n| None | 1.5 |\n"
    short = markdown_table(["a", "b", "c"], [], align=["l", None, "r"])
    assert short == "| a | b | c |\n| :--- | --- | ---: |\n"


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.lists(st.text(alphabet="ab|\\ x", max_size=6), min_size=3, max_size=3), max_size=5)
)
def test_markdown_table_every_line_has_one_more_unescaped_pipe_than_columns(rows):
    lines = markdown_table(["h1", "h|2", "h3"], rows).splitlines()
    assert len(lines) == 2 + len(rows)
    for line in lines:
        # a pipe is a column separator unless a backslash escapes it
        assert len(re.findall(r"(?<!\\)\|", line)) == 4


def test_markdown_table_row_with_wrong_length_names_the_row():
    with pytest.raises(ShapeError, match=r"row 1 has 1 cells but there are 2 headers"):
        markdown_table(["a", "b"], [[1, 2], [3]])


def test_markdown_table_bad_align_and_headers():
    with pytest.raises(ShapeError, match=r"align has 1 entries for 2 columns"):
        markdown_table(["a", "b"], [], align=["left"])
    with pytest.raises(ConfigurationError, match=r"align\[1\] = 'middle'"):
        markdown_table(["a", "b"], [], align=["left", "middle"])
    with pytest.raises(EmbedcamValueError, match=r"headers must be a non-empty"):
        markdown_table([], [])
    with pytest.raises(EmbedcamValueError, match=r"row 0 must be a sequence"):
        markdown_table(["a"], [5])


# ---------------------------------------------------------------- Report


def _png(path: Path, colour: tuple[int, int, int] = (255, 0, 0)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 3), colour).save(path, format="PNG")
    return path


def _sample_report(tmp_path: Path) -> tuple[Report, list[Path]]:
    figs = [_png(tmp_path / "figs" / "one.png"), _png(tmp_path / "figs" / "two.png", (0, 0, 255))]
    rep = Report("Run <1> & co")
    rep.add_heading("Results")
    rep.add_paragraph("Semi-hard is **better** than `hard`; 1 < 2.")
    rep.add_table(["model", "acc"], [["a|b", "0.5"]], caption="Table 1", align=["left", "right"])
    rep.add_figure(figs[0], caption="First figure")
    rep.add_figure(figs[1])
    rep.add_preformatted("x ```\n  y")
    return rep, figs


def test_report_markdown_exact_text_with_relative_figure_links(tmp_path):
    rep, _ = _sample_report(tmp_path)
    out = rep.write_markdown(tmp_path / "report.md")
    assert out == tmp_path / "report.md"
    assert out.read_text() == (
        "# Run <1> & co\n\n"
        "## Results\n\n"
        "Semi-hard is **better** than `hard`; 1 < 2.\n\n"
        "**Table 1**\n\n"
        "| model | acc |\n| :--- | ---: |\n| a\\|b | 0.5 |\n\n"
        "![First figure](figs/one.png)\n\n*First figure*\n\n"
        "![two](figs/two.png)\n\n"
        "````text\nx ```\n  y\n````\n"
    )


def test_report_markdown_links_are_relative_to_the_markdown_folder(tmp_path):
    fig = _png(tmp_path / "figs" / "my fig.png")
    rep = Report("t")
    rep.add_figure(fig)
    text = rep.write_markdown(tmp_path / "sub" / "deeper" / "r.md").read_text()
    assert "![my fig](../../figs/my%20fig.png)" in text


def test_report_html_is_self_contained_and_embeds_the_exact_png_bytes(tmp_path):
    rep, figs = _sample_report(tmp_path)
    page = rep.write_html(tmp_path / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert "<title>Run &lt;1&gt; &amp; co</title>" in page
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page and "<link" not in page and "@import" not in page
    srcs = re.findall(r'src="([^"]*)"', page)
    assert len(srcs) == 2 and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert page.count("data:image/png;base64,") == 2
    for src, fig in zip(srcs, figs):
        assert base64.b64decode(src.split(",", 1)[1]) == fig.read_bytes()
    assert "<p>Semi-hard is <strong>better</strong> than <code>hard</code>; 1 &lt; 2.</p>" in page
    assert "<caption>Table 1</caption>" in page
    assert '<td style="text-align: left">a|b</td><td style="text-align: right">0.5</td>' in page
    assert "<figcaption>First figure</figcaption>" in page
    assert "<pre><code>x ```\n  y</code></pre>" in page


def test_report_html_escapes_user_text(tmp_path):
    rep = Report("t")
    rep.add_paragraph("<script>alert(1)</script> **<b>**")
    rep.add_heading("<i>h</i>", level=3)
    page = rep.to_html()
    assert "<script>" not in page and "<i>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; <strong>&lt;b&gt;</strong>" in page
    assert "<h3>&lt;i&gt;h&lt;/i&gt;</h3>" in page


def test_report_writes_are_atomic_and_leave_no_temp_files(tmp_path):
    rep, _ = _sample_report(tmp_path)
    out_dir = tmp_path / "out"
    rep.write_html(out_dir / "report.html")
    rep.write_markdown(out_dir / "report.md")
    rep.write_html(out_dir / "report.html")  # overwrite in place
    assert sorted(p.name for p in out_dir.iterdir()) == ["report.html", "report.md"]


def test_failed_write_keeps_the_old_file_and_leaves_no_temp_files(tmp_path):
    rep, figs = _sample_report(tmp_path)
    out = rep.write_html(tmp_path / "report.html")
    before = out.read_bytes()
    figs[1].unlink()
    with pytest.raises(DataError, match=r"two\.png"):
        rep.write_html(out)
    with pytest.raises(DataError, match=r"two\.png"):
        rep.write_markdown(tmp_path / "report.md")
    assert out.read_bytes() == before
    assert not (tmp_path / "report.md").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figs", "report.html"]


def test_add_figure_missing_file_names_it(tmp_path):
    with pytest.raises(DataError, match=r"nope\.png.*does not exist"):
        Report("t").add_figure(tmp_path / "nope.png")


def test_figure_that_is_not_an_image_is_a_data_error(tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    rep = Report("t")
    rep.add_figure(bad)
    with pytest.raises(DataError, match=r"notes\.png.*neither a PNG nor a JPEG"):
        rep.to_html()


def test_jpeg_figure_gets_the_jpeg_mime_type(tmp_path):
    jpg = tmp_path / "a.jpg"
    Image.new("RGB", (4, 4), (0, 128, 0)).save(jpg, format="JPEG")
    rep = Report("t")
    rep.add_figure(jpg)
    assert 'src="data:image/jpeg;base64,' in rep.to_html()


def test_report_bad_inputs():
    rep = Report("t")
    with pytest.raises(ShapeError, match=r"row 2 has 3 cells"):
        rep.add_table(["a", "b"], [[1, 2], [3, 4], [5, 6, 7]])
    with pytest.raises(EmbedcamValueError, match=r"heading level must be an integer 1-6, got 7"):
        rep.add_heading("x", level=7)
    with pytest.raises(EmbedcamValueError, match=r"title must be a non-empty string"):
        Report("  ")
    assert len(rep) == 0


# ---------------------------------------------------------------- figure grids


def _png_array(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB")).astype(int)


def test_image_grid_pixel_size_is_cols_times_rows_times_cell_size_times_dpi(tmp_path):
    img = torch.rand(3, 16, 16)
    cells = [[GridCell(img, title=f"{r},{c}", subtitle="s") for c in range(3)] for r in range(2)]
    out = image_grid(
        cells,
        tmp_path / "g.png",
        row_titles=["r0", "r1"],
        col_titles=["a", "b", "c"],
        title="T",
        cell_size=1.5,
        dpi=40,
    )
    assert out == tmp_path / "g.png"
    with Image.open(out) as im:
        assert im.format == "PNG"
        assert im.size == (3 * 1.5 * 40, 2 * 1.5 * 40)  # (180, 120)


def test_image_grid_12_by_5_and_1_by_1(tmp_path):
    img = torch.rand(3, 8, 8)
    cells = [[GridCell(img, title="t", border="orange") for _ in range(5)] for _ in range(12)]
    with Image.open(image_grid(cells, tmp_path / "big.png", cell_size=0.5, dpi=40)) as im:
        assert im.size == (100, 240)
    with Image.open(image_grid([[GridCell(img)]], tmp_path / "one.png", dpi=50)) as im:
        assert im.size == (100, 100)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.png", "one.png"]


def test_pure_colour_cell_and_blank_none_cell(tmp_path):
    red = torch.zeros(3, 10, 10)
    red[0] = 1.0
    arr = _png_array(image_grid([[GridCell(red), None]], tmp_path / "g.png", dpi=50))
    assert arr.shape == (100, 200, 3)
    assert arr[50, 50].tolist() == [255, 0, 0]  # centre of the red panel
    assert (arr[:, 100:] == 255).all()  # the None panel is blank (white)


def test_numpy_uint8_image_is_drawn_like_the_float_tensor(tmp_path):
    rgb = np.zeros((6, 6, 3), dtype=np.uint8)
    rgb[..., 2] = 255
    arr = _png_array(image_grid([[GridCell(rgb)]], tmp_path / "g.png", cell_size=1, dpi=60))
    assert arr[30, 30].tolist() == [0, 0, 255]


def test_map_overlay_blends_the_colour_map_over_the_image(tmp_path):
    # jet(1.0) = (0.5, 0, 0); half of it over a black image is (0.25, 0, 0) -> 64 of 255
    cell = GridCell(torch.zeros(3, 10, 10), map=torch.ones(10, 10))
    arr = _png_array(image_grid([[cell]], tmp_path / "g.png", dpi=50, map_alpha=0.5))
    r, g, b = arr[50, 50].tolist()
    assert abs(r - 64) <= 1 and g == 0 and b == 0


def test_boxes_and_border_are_drawn_in_their_colours(tmp_path):
    black = torch.zeros(3, 20, 20)
    plain = _png_array(image_grid([[GridCell(black)]], tmp_path / "a.png", dpi=50))
    boxed = _png_array(
        image_grid(
            [[GridCell(black, boxes=torch.tensor([[5, 5, 15, 15]]), border="red")]],
            tmp_path / "b.png",
            dpi=100,
        )
    )
    assert not _has_colour(plain, (255, 255, 0)) and not _has_colour(plain, (255, 0, 0))
    assert _has_colour(boxed, (255, 255, 0))  # yellow box outline
    assert _has_colour(boxed, (255, 0, 0))  # red border
    # the centre (image pixel 10) is inside the box [5, 15) but far from its outline
    assert boxed[100, 100].tolist() == [0, 0, 0]


def _has_colour(arr: np.ndarray, rgb: tuple[int, int, int]) -> bool:
    # anti-aliased lines blend into the background, so accept near-matches
    return bool((np.abs(arr - np.array(rgb)).max(axis=-1) <= 40).any())


def test_many_grids_leave_no_figures_alive(tmp_path):
    from matplotlib import _pylab_helpers
    from matplotlib.figure import Figure

    cell = GridCell(torch.rand(3, 4, 4))
    for _ in range(20):
        image_grid([[cell, cell]], tmp_path / "g.png", cell_size=0.5, dpi=20)
    gc.collect()
    assert not [o for o in gc.get_objects() if type(o) is Figure]
    assert _pylab_helpers.Gcf.get_all_fig_managers() == []
    assert [p.name for p in tmp_path.iterdir()] == ["g.png"]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"image": torch.rand(4, 8, 8)}, ShapeError, r"\(3, H, W\).*got shape \(4, 8, 8\)"),
        ({"image": torch.rand(8, 8)}, ShapeError, r"got shape \(8, 8\)"),
        ({"image": np.zeros((3, 8, 8))}, ShapeError, r"\(H, W, 3\).*got shape \(3, 8, 8\)"),
        ({"image": torch.rand(3, 8, 8) * 3 - 1}, EmbedcamValueError, r"must be in \[0, 1\]"),
        ({"image": torch.full((3, 2, 2), float("nan"))}, EmbedcamValueError, r"NaN"),
        ({"image": [[0.0]]}, EmbedcamValueError, r"got list"),
        ({"map": torch.ones(8, 9)}, ShapeError, r"map must be \(H, W\) = \(8, 8\)"),
        ({"map": torch.full((8, 8), 2.0)}, EmbedcamValueError, r"map values must be in \[0, 1\]"),
        ({"boxes": torch.tensor([1, 1, 4, 4])}, ShapeError, r"boxes must be \(K, 4\)"),
        ({"boxes": torch.tensor([[4, 1, 4, 5]])}, EmbedcamValueError, r"box 0 .* x1 <= x0"),
        ({"border": "greenish"}, ConfigurationError, r"'greenish' is not a matplotlib colour"),
    ],
)
def test_grid_cell_bad_inputs(kwargs, error, match):
    args = {"image": torch.rand(3, 8, 8), **kwargs}
    with pytest.raises(error, match=match):
        GridCell(**args)


def test_image_grid_bad_inputs(tmp_path):
    cell = GridCell(torch.rand(3, 4, 4))
    out = tmp_path / "g.png"
    with pytest.raises(ShapeError, match=r"row 1 has 1 cells but row 0 has 2"):
        image_grid([[cell, cell], [cell]], out)
    with pytest.raises(ShapeError, match=r"cells is empty"):
        image_grid([], out)
    with pytest.raises(ShapeError, match=r"col_titles has 1 entries for 2 columns"):
        image_grid([[cell, None]], out, col_titles=["a"])
    with pytest.raises(ShapeError, match=r"row_titles has 2 entries for 1 rows"):
        image_grid([[cell]], out, row_titles=["a", "b"])
    with pytest.raises(EmbedcamValueError, match=r"cells\[0\]\[1\] must be a GridCell"):
        image_grid([[cell, torch.rand(3, 4, 4)]], out)
    with pytest.raises(EmbedcamValueError, match=r"cells\[0\] must be a row"):
        image_grid([cell], out)
    with pytest.raises(EmbedcamValueError, match=r"cell_size must be a positive"):
        image_grid([[cell]], out, cell_size=0)
    with pytest.raises(ConfigurationError, match=r"map_cmap 'nope'"):
        image_grid([[cell]], out, map_cmap="nope")
    assert not out.exists() and list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- package


def test_report_is_exported():
    assert ec.report.Report is Report and "report" in ec.__all__
