"""``python -m edgegw``: the same as the ``edgegw`` command."""

from __future__ import annotations

import sys

from edgegw.cli import main

# The guard matters: worker processes are started with the spawn method, which imports
# the parent's __main__ module; serving must not start again inside each worker.
if __name__ == "__main__":
    sys.exit(main())
