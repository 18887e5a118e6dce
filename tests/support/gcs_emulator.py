"""A Google Cloud Storage emulator on loopback for the bucket work-dir tests.

`gcp-storage-emulator` (the dev extra) serves the GCS JSON API on 127.0.0.1. The production
clients reach it through their standard settings, so the code under test is the code a TPU pod
runs: gcsfs (what etils.epath uses for gs:// without TensorFlow: orbax's directories, our
metrics, events, previews, config) reads STORAGE_EMULATOR_HOST; tensorstore (orbax's array
shards) reads TENSORSTORE_GCS_HTTP_URL and takes a fixed token instead of credentials. The
server runs through tests/support/gcs_emulator_server.py, which adds the `x-goog-generation`
download header real GCS sends (tensorstore's conditional writes need it).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import sys
import time

BUCKET = "metatalk-test"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def emulator_environment(port: int) -> dict:
    url = f"http://127.0.0.1:{port}"
    return {"STORAGE_EMULATOR_HOST": url, "TENSORSTORE_GCS_HTTP_URL": url,
            "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator", "TENSORSTORE_GCS_HTTP_VERSION": "1"}


@contextlib.contextmanager
def running_emulator(data_dir: str):
    """Starts the emulator with bucket BUCKET; sets its environment in os.environ (inherited by
    subprocesses) while it runs; stops it and restores the environment after."""
    port = _free_port()
    log = open(os.path.join(os.path.dirname(data_dir), "gcs_emulator.log"), "w")
    server = subprocess.Popen(
        [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                      "gcs_emulator_server.py"), "-d", data_dir, "start",
         "--host", "127.0.0.1", "--port", str(port), "--default-bucket", BUCKET],
        stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            break
        except OSError:
            if server.poll() is not None or time.time() > deadline:
                server.kill()
                raise RuntimeError("the GCS emulator did not start") from None
            time.sleep(0.1)
    saved = {k: os.environ.get(k) for k in emulator_environment(port)}
    os.environ.update(emulator_environment(port))
    # gcsfs warns on every call that the emulator's bucket type is unknown
    logging.getLogger("gcsfs").setLevel(logging.ERROR)
    try:
        yield f"gs://{BUCKET}"
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
