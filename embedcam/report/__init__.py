"""Figure grids and Markdown/HTML reports.

- [`image_grid`][embedcam.report.figures.image_grid] draws rows of
  [`GridCell`][embedcam.report.figures.GridCell] panels (image, verdict border, boxes, heat-map
  overlay) into a PNG - the layout of the paper's Figures 1-4.
- [`rank_list_figure`][embedcam.report.retrieval.rank_list_figure] draws a retrieval rank list
  (query, neighbours, the maps of both sides of every match).
- [`markdown_table`][embedcam.report.document.markdown_table] formats a GitHub-Markdown table.
- [`Report`][embedcam.report.document.Report] collects headings, paragraphs, lists, tables and
  figures and writes them as Markdown (figures linked) and as one self-contained HTML file (figures
  embedded, no network needed).

All files are written atomically (a temporary file in the same folder, then ``os.replace``).
matplotlib is imported only when a grid is drawn, so ``import embedcam`` stays light.
"""

from __future__ import annotations

from embedcam.report.document import Report, markdown_table
from embedcam.report.figures import GridCell, image_grid
from embedcam.report.retrieval import rank_list_figure

__all__ = ["GridCell", "image_grid", "rank_list_figure", "markdown_table", "Report"]
