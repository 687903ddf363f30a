"""``python -m embedcam.datasets OUT.png [INTERVENTIONS.png]``: write the docs' preview figures."""

from __future__ import annotations

import sys

from embedcam.datasets.preview import _main

raise SystemExit(_main(sys.argv[1:]))
