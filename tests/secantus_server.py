"""A SecantusDB server in its own process, for the tests: ``python secantus_server.py ...``.

SecantusDB speaks MongoDB's wire protocol over WiredTiger. It runs apart from pytest so that a
test can kill it (SIGKILL, as a crash would) and start it again on the same storage and port,
and so that a native crash of the server never takes the test run with it.

The port it listens on (port 0: the system picks one) is written to PORT_FILE once the server
accepts connections.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

from secantus import SecantusDBServer


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("storage")
    parser.add_argument("port_file")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--standalone", action="store_true")
    parser.add_argument("--transaction-lifetime", type=float, default=60.0)
    parser.add_argument("--auth", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    server = SecantusDBServer(
        port=args.port,
        storage_path=args.storage,
        replica_set_name=None if args.standalone else "secantus",
        transaction_lifetime_seconds=args.transaction_lifetime,
        require_auth=args.auth,
        cache_size="256M",
    )

    def stop(*_: object) -> None:
        server.stop()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server.start()
    port_file = Path(args.port_file)
    port_file.with_suffix(".tmp").write_text(str(server.address[1]))
    port_file.with_suffix(".tmp").replace(port_file)
    server.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
