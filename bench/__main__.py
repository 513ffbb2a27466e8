"""`python -m bench [options]`: every benchmark in turn (prefill, decode, activations, tokenize, load),
each in its own process, passing the options on (e.g. --models default or --quick).
The soak is left out: it runs for minutes (`python -m bench.soak`)."""

from __future__ import annotations

import subprocess
import sys

from bench.common import ROOT

COMMANDS = ["prefill", "decode", "activations", "tokenize", "load"]


def main() -> int:
    failed = []
    for name in COMMANDS:
        print(f"\n## bench.{name}\n", flush=True)
        if subprocess.run([sys.executable, "-m", f"bench.{name}", *sys.argv[1:]], cwd=ROOT).returncode:
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
