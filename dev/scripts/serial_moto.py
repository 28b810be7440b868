"""Runs the moto emulator one request at a time.

DynamoDB applies each conditional write atomically. moto's own server handles requests on
threads and checks a condition before applying the write without a lock, so two concurrent
conditional writes can both succeed there, which DynamoDB never allows. Serving one request at a
time restores DynamoDB's guarantee for everything the local stack and the tests do. moto is
bound by one core either way, so little throughput is lost.

Usage: python serial_moto.py PORT   (always binds 127.0.0.1)
"""

import os
import signal
import sys

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import run_simple


def main() -> None:
    port = int(sys.argv[1])
    os.environ.setdefault("MOTO_PORT", str(port))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(
        "127.0.0.1",
        port,
        app,
        threaded=False,
        use_reloader=False,
        request_handler=MotoRequestHandler,
    )


if __name__ == "__main__":
    main()
