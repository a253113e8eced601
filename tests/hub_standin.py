"""A STAND-IN for the HuggingFace hub's HTTP API (tests only: the real hub is out of reach here), serving the
files of local folders as model repositories on loopback. Point HF_ENDPOINT at `url`.

It answers exactly what huggingface_hub 1.33 asks when `confgen pull` runs (read from its source in .venv):
- HfApi.model_info(files_metadata=True): GET /api/models/<repo>/revision/<rev>?blobs=True -> JSON with
  `sha`, `gated` and `siblings` (rfilename, size, blobId, lfs {size, sha256, pointerSize});
- hf_hub_download: HEAD /<repo>/resolve/<rev>/<file> (get_hf_file_metadata reads X-Repo-Commit,
  X-Linked-Etag or ETag, X-Linked-Size or Content-Length), then GET of the same URL, with
  `Range: bytes=N-` when it resumes an .incomplete file (http_get);
- a gated repository without `Authorization`: 401 with X-Error-Code: GatedRepo (hf_raise_for_status).
`drop_after` cuts the first GET of a file after so many bytes, as a dropped connection would; `fail` answers
500 to every GET of the files it names, as a hub in trouble would.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit


@dataclass
class Repo:
    folder: Path
    gated: bool = False
    sha: str = "0123456789abcdef0123456789abcdef01234567"

    def files(self) -> list[Path]:
        return sorted(p for p in self.folder.iterdir() if p.is_file() and not p.name.startswith("."))


@dataclass
class Hub:
    repos: dict[str, Repo]
    drop_after: dict[str, int] = field(default_factory=dict)
    fail: set[str] = field(default_factory=set)
    requests: list[tuple[str, str, str]] = field(default_factory=list)  # method, path, Range header
    url: str = ""


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _handler(hub: Hub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _send(self, status: int, headers: dict[str, str], body: bytes = b"") -> None:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", headers.get("Content-Length", str(len(body))))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def do_GET(self) -> None:
            self._serve()

        def do_HEAD(self) -> None:
            self._serve()

        def _serve(self) -> None:
            path = unquote(urlsplit(self.path).path)
            hub.requests.append((self.command, path, self.headers.get("Range", "")))
            if path.startswith("/api/models/") and "/revision/" in path:
                self._info(path.removeprefix("/api/models/").split("/revision/")[0])
            elif "/resolve/" in path:
                repo_id, rest = path.lstrip("/").split("/resolve/", 1)
                self._file(repo_id, rest.split("/", 1)[1])
            else:
                self._send(404, {"Content-Type": "application/json"}, b'{"error": "not served by the stand-in"}')

        def _repo(self, repo_id: str) -> Repo | None:
            repo = hub.repos.get(repo_id)
            if repo is None:
                self._send(404, {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"})
            return repo

        def _info(self, repo_id: str) -> None:
            repo = self._repo(repo_id)
            if repo is None:
                return
            siblings = [{"rfilename": f.name, "size": f.stat().st_size, "blobId": _sha256(f)[:40],
                         "lfs": {"size": f.stat().st_size, "sha256": _sha256(f), "pointerSize": 134}}
                        for f in repo.files()]
            body = json.dumps({"id": repo_id, "sha": repo.sha, "private": False, "gated": "manual" if repo.gated
                               else False, "siblings": siblings}).encode()
            self._send(200, {"Content-Type": "application/json"}, body)

        def _file(self, repo_id: str, name: str) -> None:
            repo = self._repo(repo_id)
            if repo is None:
                return
            if repo.gated and not self.headers.get("Authorization"):
                self._send(401, {"X-Error-Code": "GatedRepo", "X-Error-Message": "Access to this model is restricted"})
                return
            target = repo.folder / name
            if not target.is_file():
                self._send(404, {"X-Error-Code": "EntryNotFound", "X-Error-Message": "Entry not found"})
                return
            if self.command == "GET" and name in hub.fail:
                self._send(500, {"X-Error-Message": "stand-in told to fail"})
                return
            data = target.read_bytes()
            start = int(self.headers["Range"].split("=")[1].split("-")[0]) if self.headers.get("Range") else 0
            headers = {"X-Repo-Commit": repo.sha, "ETag": f'"{_sha256(target)}"', "Accept-Ranges": "bytes",
                       "Content-Type": "application/octet-stream"}
            if start:
                headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            body = data[start:]
            cut = hub.drop_after.pop(name, None) if self.command == "GET" else None
            if cut is None:
                self._send(206 if start else 200, headers, body)
                return
            self.send_response(206 if start else 200)
            for key, value in {**headers, "Content-Length": str(len(body))}.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.close_connection = True

    return Handler


@contextmanager
def serve(repos: dict[str, Repo], drop_after: dict[str, int] | None = None) -> Iterator[Hub]:
    hub = Hub(repos, dict(drop_after or {}))
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(hub))
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
