"""Entry point: ``python -m slo_operator run|validate|plan`` (also the ``slo-operator`` script)."""

from __future__ import annotations

import sys

from slo_operator.cli import main

if __name__ == "__main__":
    sys.exit(main())
