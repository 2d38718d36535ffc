"""``make fuzz``: a hostile client against a real ``vivify serve`` on loopback (issue 15).

``python -m bench.fuzz [--quick] [--out PATH]`` starts the server the way an operator does
(``python -m vivify.streamer.cli serve --token T --max-sessions 3 --idle-timeout 4``, a private
``VIVIFY_HOME`` whose ``models`` links to the face models), its stdout and stderr in a log
file, and replays every case of issue 15 against it, each with its own time limit: non-finite
and out-of-range controls, deep and oversize WebSocket frames, WebSocket auth failures, huge
bodies before and after auth, a burst of creates on a cold avatar, idle sessions, malformed
SDP, a decompression-bomb image for ``/v1/verify``, a foreign ``Origin``, memory at the end,
SIGTERM with a WebSocket open, and the token in the log.

Each case records whether it passed, what was observed, and the server's RSS (VmRSS from
/proc; the server is one process, its workers are threads) before, after and at its peak
(sampled every 10 ms). After each case the server must still answer ``/healthz``; a server
that died is restarted (and the death recorded), so one crash does not hide the other cases.
One line per case, then ``fuzz: N passed, M failed``; the JSON report goes to ``--out``
(``bench/results/fuzz-latest.json``) with the server log next to it (``.log``). Exit 1 if any
case failed. ``--quick`` shrinks the huge bodies (100/150 MB instead of 300/500 MB); every case
still runs. About a minute either way when the server passes.

The package: ``probe`` (the bars, the verdict types, the shared :class:`Probe`), ``raw_http``
(huge bodies from a raw socket), ``payloads`` (odd offers, images), ``cases`` (the cases and
the list run), ``run`` (running them, the report, ``main``). The server is
:class:`bench.harness.server.LiveServer`.
"""

from bench.fuzz.run import main, run_probe

__all__ = ["main", "run_probe"]
