"""``python -m bench.fuzz`` (``make fuzz``)."""

import sys

from bench.fuzz.run import main

sys.exit(main())
