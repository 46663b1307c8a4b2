"""moto's server, answering one request at a time.

`moto_server` serves requests on many threads, and moto's DynamoDB checks a write's
ConditionExpression and applies the write without a lock: two concurrent conditional writes
can both pass (the lease race test saw two winners). Real DynamoDB applies each conditional
write atomically per item, so this wrapper restores that by running moto's own WSGI app under
one lock. Connections are still accepted concurrently; only the handling is serialised.

Usage: python moto_server.py HOST PORT   (started by scripts/moto.sh)
"""

import os
import signal
import sys
import threading

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import run_simple


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    os.environ.setdefault("MOTO_PORT", str(port))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, lambda *_: sys.exit(0))

    app = DomainDispatcherApplication(create_backend_app)
    lock = threading.Lock()

    def serialised(environ, start_response):
        with lock:
            # Materialise the body inside the lock: the write happens while it is produced.
            return list(app(environ, start_response))

    run_simple(
        host,
        port,
        serialised,
        threaded=True,
        request_handler=MotoRequestHandler,
    )


if __name__ == "__main__":
    main()
