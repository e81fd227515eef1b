"""`python -m broker_service.cli`: the `tinymetafed` command without its console script."""

import sys

from broker_service.cli import main

if __name__ == "__main__":
    sys.exit(main())
