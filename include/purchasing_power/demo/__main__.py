"""``python -m purchasing_power.demo``: see :func:`purchasing_power.demo.writer.main`."""

from __future__ import annotations

import sys

from purchasing_power.demo.writer import main

sys.exit(main())
