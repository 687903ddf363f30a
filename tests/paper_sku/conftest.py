"""Put ``<repo>/examples`` on sys.path so that the ``paper_sku`` example package imports."""

import sys
from pathlib import Path

_EXAMPLES = str(Path(__file__).resolve().parents[2] / "examples")
if _EXAMPLES not in sys.path:
    sys.path.insert(0, _EXAMPLES)
