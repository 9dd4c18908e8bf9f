"""`make wait`: block until the server `make run` starts answers `GET /readyz` with 200.

The README's "Try it" starts `make run &` and then needs the server; this waits for it (the
first run also builds the venv and initialises the embedded database, a minute or more) and
exits 1 with a message when it does not come up in time. Where to look is read the way the
server reads it (HOST and PORT from the environment or `.env`); a wildcard HOST is asked on
loopback. Run with the project's venv and PYTHONPATH=backend.
"""

from __future__ import annotations

import argparse
import http.client
import sys
import time

from pydantic import ValidationError

from config import Settings, describe_settings_error

WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}  # noqa: S104


def ready(host: str, port: int, timeout: float) -> bool:
    """True when `GET /readyz` answers 200."""
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request("GET", "/readyz")
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make wait", description=__doc__.split("\n\n")[0])
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds (WAIT_SECONDS)")
    args = parser.parse_args(argv)
    try:
        settings = Settings()
    except ValidationError as exc:
        print(f"make wait: {describe_settings_error(exc)}", file=sys.stderr)
        return 1
    host = WILDCARDS.get(settings.host, settings.host)
    deadline = time.monotonic() + args.timeout
    while not ready(host, settings.port, timeout=2.0):
        if time.monotonic() >= deadline:
            print(
                f"make wait: nothing ready on http://{host}:{settings.port} after"
                f" {args.timeout:g} s: is `make run` running (see its output)?",
                file=sys.stderr,
            )
            return 1
        time.sleep(0.25)
    print(f"ready: http://{host}:{settings.port}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
