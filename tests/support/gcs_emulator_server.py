"""gcp-storage-emulator's server with the generation headers of GCS media downloads.

Real GCS answers every object download with `x-goog-generation` (and metageneration); the
emulator (2026.7.19) sends neither. tensorstore's GCS driver reads the object generation from
that header to make its conditional writes, and OCDBT (orbax's checkpoint format) re-reads its
manifest that way while a multi-host save commits: without the header it fails with "Malformed
StorageGeneration". This wrapper adds the headers and starts the emulator's own CLI.

    python tests/support/gcs_emulator_server.py -d DIR start --host 127.0.0.1 --port P \
        --default-bucket B
"""

import sys

from gcp_storage_emulator import server
from gcp_storage_emulator.__main__ import main
from gcp_storage_emulator.handlers import objects

_download = objects.download


def download_with_generation(request, response, storage, *args, **kwargs):
    _download(request, response, storage, *args, **kwargs)
    if response.status.value >= 300:
        return
    try:
        obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
    except Exception:  # the emulator's NotFound and friends: nothing to add
        return
    response["x-goog-generation"] = str(obj["generation"])
    response["x-goog-metageneration"] = str(obj.get("metageneration", "1"))


objects.download = download_with_generation          # objects.get calls it for ?alt=media
for _, methods in server.HANDLERS:                   # the /download/... route holds it directly
    for method, handler in list(methods.items()):
        if handler is _download:
            methods[method] = download_with_generation

if __name__ == "__main__":
    sys.exit(main())
