"""The command the DirectRunner runs for each local SDK worker when warm workers are on.

Standard library only, run as `python -I -S worker_relay.py SOCKET`
(beam_pipeline.launcher.warm_workers): it starts in ~10 ms, hands its environment
(the control and logging addresses and the pipeline options Beam set for the
worker) to the warm process listening on SOCKET, which forks the worker, and
exits with the worker's status once it has ended, as the worker process itself
would have. When the warm process cannot be reached, the relay becomes a
worker started as Beam starts one.
"""

import json
import os
import signal
import socket
import sys

COLD_WORKER = ("-m", "apache_beam.runners.worker.sdk_worker_main")


def relay(connection: socket.socket) -> int:
    """The forked worker's exit status; a worker gone without one counts as failed (1)."""
    with connection:
        connection.sendall(json.dumps(dict(os.environ)).encode("utf-8"))
        connection.shutdown(socket.SHUT_WR)
        reply = b""
        while True:
            chunk = connection.recv(64)
            if not chunk:
                break
            reply += chunk
    try:
        return int(reply)
    except ValueError:
        return 1


def main(argv: list) -> int:
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        connection.connect(argv[1])
    except OSError:  # no warm process (it failed to start, or is gone): a cold worker instead
        connection.close()
        os.execv(sys.executable, [sys.executable, *COLD_WORKER])
    # Ctrl-C reaches the worker too, whose status this relay then returns, as a cold worker's.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return relay(connection)
    except OSError:  # the warm process went away while the worker was asked for
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
