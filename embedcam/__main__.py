"""``python -m embedcam``: the ``embedcam`` command line (see `embedcam.cli`)."""

from __future__ import annotations

from embedcam.cli import main

raise SystemExit(main())
