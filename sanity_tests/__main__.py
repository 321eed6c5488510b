"""Run the sanity suite on one run before promoting it.

    python -m sanity_tests --run LineupTrainFlow/1795735658529118 [--json]

Prints the report and exits 1 when any check fails. It is ``lineup check``.
"""

import argparse
import sys

from service.cli import main

parser = argparse.ArgumentParser(prog="python -m sanity_tests", description=__doc__.split("\n")[0])
parser.add_argument("--run", required=True, help="run id or pathspec of the training flow")
parser.add_argument("--json", action="store_true", help="print the verdict as JSON")
args = parser.parse_args()
sys.exit(main((["--json"] if args.json else []) + ["check", args.run]))
