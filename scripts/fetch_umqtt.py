"""Put micropython-lib's umqtt.simple (PyPI: micropython-umqtt.simple) onto a MICROPYPATH folder.

The package is an old-style sdist that pip refuses to install, so this reads the package index's
JSON description of it (the index pip itself uses), downloads the sdist, checks its SHA-256 and
unpacks umqtt/simple.py into DEST/umqtt/.  Usage: python scripts/fetch_umqtt.py DEST
"""

import hashlib
import io
import json
import sys
import tarfile
import urllib.request
from pathlib import Path

from pip._internal.models.index import PyPI

PACKAGE = "micropython-umqtt.simple"
VERSION = "1.3.4"


def sdist_url() -> tuple[str, str]:
    """The sdist's download URL and SHA-256 from the index's JSON API."""
    with urllib.request.urlopen("%s/%s/json" % (PyPI.pypi_url, PACKAGE), timeout=60) as r:
        info = json.load(r)
    for entry in info["releases"].get(VERSION, []):
        if entry["packagetype"] == "sdist":
            return entry["url"], entry["digests"]["sha256"]
    raise SystemExit("no sdist of %s %s on the index" % (PACKAGE, VERSION))


def main(dest: str) -> int:
    target = Path(dest) / "umqtt"
    if (target / "simple.py").exists():
        return 0
    url, sha = sdist_url()
    with urllib.request.urlopen(url, timeout=60) as r:
        blob = r.read()
    if hashlib.sha256(blob).hexdigest() != sha:
        raise SystemExit("checksum mismatch for %s" % url)
    target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("umqtt/simple.py"))
        (target / "simple.py").write_bytes(tar.extractfile(member).read())
    (target / "__init__.py").touch()
    print("installed umqtt.simple %s into %s" % (VERSION, target))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
