"""`python -m cli ...`: the `enclave` command, as the tests and benchmarks start it."""

import sys

from cli.main import main

sys.exit(main())
