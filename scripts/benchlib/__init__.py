"""Flotilla's benchmarks, shared by `scripts/bench` (all of them, one table, JSON) and the
older `scripts/bench-*` entry points (one each).

Importing the package makes the checkout importable (`flotilla` is installed editable,
the `testbed` the benchmarks share with the tests is not) and gives boto3 dummy
credentials and a region, so that every benchmark talks to local stand-ins (moto server,
DynamoDB Local) and never to AWS. No benchmark imports the tests package.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
for _name, _value in {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
}.items():
    os.environ.setdefault(_name, _value)
