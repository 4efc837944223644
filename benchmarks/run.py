"""`make bench`: run every benchmarks/bench_*.py and let each write its JSON under benchmarks/results/.

Each benchmark module exposes ``main() -> dict`` and writes ``benchmarks/results/<name>.json`` itself
(atomically); speed is compared as ratios measured within one run, never against stored numbers.
"""

import importlib.util
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    benches = sorted(HERE.glob("bench_*.py"))
    if not benches:
        print("no benchmarks found", file=sys.stderr)
        return 1
    for path in benches:
        print(f"== {path.stem}", flush=True)
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
