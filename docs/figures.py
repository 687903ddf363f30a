"""Write the dataset figures of the docs: ``python docs/figures.py [OUT_DIR]`` (``make figures``).

Generates a small synthetic shelf export in a temporary folder and writes its preview
(``synthetic_shelf.png``: samples with boxes and mask outlines) and a grid of its background
interventions (``interventions.png``) to ``OUT_DIR`` (default: ``docs/img``). Uses only the
public API, as a user would.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from embedcam.datasets import ShelfConfig, generate_shelf, save_intervention_grid, save_preview

#: The shelf the docs show: 16 classes (8 families of 2 siblings), 2 training images each.
CONFIG = ShelfConfig(
    image_size=128,
    families=8,
    siblings=2,
    images_per_class={"train": 2},
    distractors=1,
    occlusion=0.3,
    seed=0,
)


def main(argv: list[str]) -> int:
    """Write ``synthetic_shelf.png`` and ``interventions.png``; returns the exit status."""
    if len(argv) > 1:
        print("usage: python docs/figures.py [OUT_DIR]", file=sys.stderr)
        return 2
    out = Path(argv[0]) if argv else Path(__file__).resolve().parent / "img"
    with tempfile.TemporaryDirectory() as tmp:
        index = generate_shelf(Path(tmp) / "shelf", CONFIG)
        for path in (
            save_preview(index, out / "synthetic_shelf.png", n=16, cols=8, tile=96),
            save_intervention_grid(index, out / "interventions.png", n=4, tile=80),
        ):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
