"""Print the markdown tables of committed bench results: python benchmarks/make_table.py FILES."""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from broker_service.sim.bench import format_markdown  # noqa: E402

if __name__ == "__main__":
    print(format_markdown([json.loads(Path(path).read_text()) for path in sys.argv[1:]]))
