"""Print the markdown tables of committed bench results: python -m benchmarks.make_table FILES."""

import json
import sys
from pathlib import Path

from broker_service.sim.bench import format_markdown

if __name__ == "__main__":
    print(format_markdown([json.loads(Path(path).read_text()) for path in sys.argv[1:]]))
