"""A fake `ollama` command for the tests, around the test double (tests/ollama_double.py).

    ollama serve                     the double on $OLLAMA_HOST until SIGTERM; FAKE_OLLAMA_DELAY
                                     waits that many seconds before listening, FAKE_OLLAMA_FAIL
                                     prints its text and exits 1, FAKE_OLLAMA_VERSION sets the
                                     release it behaves as (default: the newest the double knows)
    ollama create NAME -f Modelfile  what the real CLI does: parse the Modelfile (with
                                     tests/modelfile_check.py, by the rules of the server's
                                     version, as a CLI installed with that server), upload the
                                     blobs, create
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath

if not __package__:  # run as a script: make `tests` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests import modelfile_check as mfc  # noqa: E402
from tests.ollama_double import NEWEST, OllamaDouble  # noqa: E402


def _cli_create(name: str, modelfile: Path) -> int:
    """What `ollama create NAME -f Modelfile` does: parse, upload blobs, create."""
    host = os.environ.get("OLLAMA_HOST", "127.0.0.1:11434")
    url = host if "://" in host else "http://" + host
    if not mfc.name_is_valid(name):
        print(f"Error: invalid model name: {name}", file=sys.stderr)
        return 1
    with urllib.request.urlopen(f"{url}/api/version") as r:
        version = json.loads(r.read())["version"]
    try:
        req = mfc.request(modelfile.read_text(encoding="utf-8"), modelfile.parent, version)
    except (mfc.ModelfileError, OSError) as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
    body = {"model": name, **{k: v for k, v in req.items() if k not in ("files", "adapters")}}
    for group in ("files", "adapters"):
        if group in req:
            body[group] = {}
            for path in req[group]:
                data = Path(path).read_bytes()
                digest = "sha256:" + hashlib.sha256(data).hexdigest()
                urllib.request.urlopen(urllib.request.Request(
                    f"{url}/api/blobs/{digest}", data=data, method="POST"))
                body[group][PurePosixPath(path).name] = digest
    request = urllib.request.Request(f"{url}/api/create", data=json.dumps(body).encode(),
                                     method="POST")
    try:
        with urllib.request.urlopen(request) as r:
            for line in r:
                event = json.loads(line)
                if "error" in event:
                    print(f"Error: {event['error']}", file=sys.stderr)
                    return 1
                print(event["status"], file=sys.stderr)
    except urllib.error.HTTPError as e:
        print(f"Error: {json.loads(e.read())['error']}", file=sys.stderr)
        return 1
    return 0


def _cli_serve() -> int:
    if os.environ.get("FAKE_OLLAMA_FAIL"):
        print(os.environ["FAKE_OLLAMA_FAIL"], flush=True)
        return 1
    time.sleep(float(os.environ.get("FAKE_OLLAMA_DELAY", "0")))
    host, _, port = os.environ.get("OLLAMA_HOST", "127.0.0.1:11434").rpartition(":")
    double = OllamaDouble(os.environ.get("FAKE_OLLAMA_VERSION", NEWEST), int(port))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"Listening on {host}:{port} (version {double.version})", flush=True)
    try:
        double.httpd.serve_forever()
    finally:
        double._release()
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["serve"]:
        return _cli_serve()
    if len(argv) == 4 and argv[0] == "create" and argv[2] == "-f":
        return _cli_create(argv[1], Path(argv[3]))
    print(f"fake ollama: unsupported arguments {argv}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

