"""``python -m embedcam``: the ``embedcam`` command line (see :mod:`embedcam.cli`)."""

from __future__ import annotations

from embedcam.cli import main

raise SystemExit(main())
