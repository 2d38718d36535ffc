"""``python -m vivify.streamer.cli``: the same as the ``vivify`` command."""

import sys

from vivify.streamer.cli.main import main

sys.exit(main())
