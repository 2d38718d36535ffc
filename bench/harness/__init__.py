"""What every benchmark shares, written once.

``server``        one live ``vivify serve`` in a child process (free loopback port, private
                  ``VIVIFY_HOME``, ready on ``/healthz``, log file, stop); the tests use it too.
``lifted_serve``  ``vivify serve`` with its admission limit lifted after it measured its own
                  (the loopback benchmark's capacity ramp goes past the server's estimate).
``peers``         aiortc peers on :mod:`vivify.streamer.client` that send a logged microphone
                  signal and record when every frame arrives.
``runner``        the stage runner: time a stage, record its failure, go on with the next.
``procfs``        what /proc says about a process: RSS, CPU time, and samplers of both.
``results``       JSON writing (numpy-aware, atomic), percentiles, fps per second.
``machine``       what the numbers depend on: host, CPU, GPU, runtimes, versions, git sha.
``modes``         the shared command line: ``--quick`` / ``--tiny``, a comma-separated subset.
"""
