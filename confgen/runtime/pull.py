"""Download a catalog model's weights into the HuggingFace cache the vLLM container mounts
(docker-compose.yml: ${HF_CACHE:-~/.cache/huggingface} -> HF_HOME, so files land in <HF_CACHE>/hub), with
huggingface_hub's own download machinery: one progress bar per file and one for all of them, resumable
(hf_hub_download continues a blob's `.incomplete` file with a Range request), the free disk checked first,
and a gated repository refused before any byte when secrets/HF_TOKEN is missing.

HF_ENDPOINT picks the hub (huggingface_hub's own variable; the tests point it at a stand-in).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import click
import httpx

from confgen.atomic import write_atomic
from confgen.errors import EXIT_FAILED, ConfgenError
from confgen.load import Project
from confgen.merge import ResolvedModel
from confgen.runtime import secret_files

if TYPE_CHECKING:  # tqdm and huggingface_hub are the gateway venv's; the vLLM node image's CLI has neither
    from tqdm import tqdm  # type: ignore[import-untyped]  # tqdm ships no type information

# Left free after the download: the cache's disk also holds the venvs, the images and vLLM's compile cache.
RESERVE_BYTES = 2 * 10**9
GB, MB = 10**9, 10**6  # decimal, as the hub and the model files' weights_gb count
TOKEN = "HF_TOKEN"  # noqa: S105 - the name of the secret file, not its value


@dataclass(frozen=True)
class RepoFile:
    name: str
    size: int


@dataclass(frozen=True)
class Remote:
    """What the hub says about a repository at one revision."""

    repo: str
    sha: str
    gated: bool
    files: list[RepoFile]
    revision: str = "main"

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)


def cache_root(environ: dict[str, str]) -> Path:
    """The folder docker-compose.yml mounts as the container's HF_HOME."""
    return Path(environ.get("HF_CACHE") or Path.home() / ".cache" / "huggingface")


def hub_cache(environ: dict[str, str]) -> Path:
    return cache_root(environ) / "hub"


def endpoint(environ: dict[str, str]) -> str:
    return (environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def token(project: Project) -> str | None:
    return secret_files.optional(project, (TOKEN,)).get(TOKEN)


def remote(repo: str, environ: dict[str, str], hf_token: str | None, revision: str = "main",
           timeout_s: float = 30) -> Remote:
    """The repository's commit, gating and files with their sizes (GET /api/models/<repo>/revision/<rev>)."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    api = HfApi(endpoint=endpoint(environ), token=hf_token or False)
    try:
        info = api.model_info(repo, revision=revision, files_metadata=True, timeout=timeout_s)
    except RepositoryNotFoundError:
        raise ConfgenError.one(repo, f"no such model at {endpoint(environ)} (or it is private and the token in "
                               f"secrets/{TOKEN} may not read it)", "check the model id in the model file's "
                               "command, or the token", EXIT_FAILED) from None
    except (HfHubHTTPError, httpx.HTTPError, OSError) as exc:
        raise ConfgenError.one(repo, f"the hub at {endpoint(environ)} did not answer: {_first(exc)}",
                               "check the network (or HF_ENDPOINT), then run `confgen pull` again",
                               EXIT_FAILED) from None
    files = [RepoFile(s.rfilename, s.lfs.size if s.lfs else (s.size or 0)) for s in info.siblings or []]
    return Remote(repo, str(info.sha), bool(info.gated), files, revision)


def _first(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def refuse_gated(remote_: Remote, hf_token: str | None, project: Project) -> None:
    if remote_.gated and not hf_token:
        raise ConfgenError.one(remote_.repo, "is gated: the hub serves its files only with a token of an account "
                               "that accepted its terms", f"accept them on the model's page, then put a token in "
                               f"{project.rel(project.secrets_dir / TOKEN)} (one line, chmod 600)", EXIT_FAILED)


def storage(repo: str, cache: Path) -> Path:
    """A repository's folder in the hub cache (huggingface_hub's file_download.repo_folder_name)."""
    return cache / f"models--{repo.replace('/', '--')}"


def cached_bytes(remote_: Remote, cache: Path) -> int:
    """Bytes of `remote_` already complete in the cache (a file of the snapshot)."""
    snapshot = storage(remote_.repo, cache) / "snapshots" / remote_.sha
    return sum(f.size for f in remote_.files if (snapshot / f.name).is_file())


def check_disk(needed: int, where: Path, free: Callable[[Path], int] | None = None) -> None:
    """Refuse a download that would leave less than RESERVE_BYTES free where it lands."""
    existing = next((p for p in (where, *where.parents) if p.exists()), Path("/"))
    available = (free or (lambda p: shutil.disk_usage(p).free))(existing)
    if needed + RESERVE_BYTES > available:
        raise ConfgenError.one(str(where), f"needs {size_text(needed)} more (and {size_text(RESERVE_BYTES)} left "
                               f"free), but {existing} has {size_text(available)} free", "free some space, or point "
                               "HF_CACHE at a bigger disk (vars.env or the environment)", EXIT_FAILED)


def size_text(size: float) -> str:
    return f"{size / GB:.1f} GB" if size >= GB / 10 else f"{size / MB:.1f} MB"


def _file_bar(overall: tqdm, name: str) -> type[tqdm]:
    """The bar hf_hub_download draws for one file (named by the file, not the URL), also moving the overall bar."""
    from tqdm import tqdm

    class FileBar(tqdm):  # type: ignore[misc]
        parent: ClassVar[tqdm] = overall

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.update(desc=name, leave=True)
            super().__init__(*args, **kwargs)
            if self.n:  # resumed from an .incomplete file
                self.parent.update(self.n)

        def update(self, n: float | None = 1) -> bool | None:
            self.parent.update(n)
            shown: bool | None = super().update(n)
            return shown

    return FileBar


def download(remote_: Remote, environ: dict[str, str], hf_token: str | None, label: str) -> Path:
    """Every file of `remote_` into the hub cache, one after the other; the snapshot folder."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError
    from tqdm import tqdm

    cache = hub_cache(environ)
    done = cached_bytes(remote_, cache)
    with tqdm(total=remote_.size, initial=done, unit="B", unit_scale=True, desc=f"{label} (all files)",
              position=0, leave=True) as overall:
        for item in remote_.files:
            try:
                path = hf_hub_download(remote_.repo, item.name, revision=remote_.sha, cache_dir=cache,
                                       endpoint=endpoint(environ), token=hf_token or False,
                                       tqdm_class=_file_bar(overall, item.name))
            except (HfHubHTTPError, httpx.HTTPError, OSError) as exc:
                raise ConfgenError.one(f"{remote_.repo}: {item.name}", f"download failed: {_first(exc)}",
                                       "run `confgen pull` again: it goes on where it stopped", EXIT_FAILED) from None
    # Files fetched by commit do not name the branch: write refs/<revision> as snapshot_download does, or an
    # offline vLLM (HF_HUB_OFFLINE=1) cannot resolve "main" to this snapshot (LocalEntryNotFoundError).
    write_atomic(storage(remote_.repo, cache) / "refs" / remote_.revision, remote_.sha, mode=0o644)
    return Path(path).parent if remote_.files else cache


def pull(project: Project, models: list[ResolvedModel], environ: dict[str, str]) -> list[Path]:
    """Look every model up first (gated, sizes, disk), then download them."""
    from confgen.runtime.local_weights import is_local

    hf_token = token(project)
    wanted: list[tuple[ResolvedModel, Remote]] = []
    for model in models:
        if is_local(model):
            click.echo(f"{model.name}: built on this machine into {model.hf_id} (./runMe.sh install), nothing to pull")
            continue
        found = remote(model.hf_id, environ, hf_token)
        refuse_gated(found, hf_token, project)
        wanted.append((model, found))
    cache = hub_cache(environ)
    check_disk(sum(r.size - cached_bytes(r, cache) for _, r in wanted), cache)
    folders = []
    for model, found in wanted:
        have = cached_bytes(found, cache)
        click.echo(f"{model.name}: {found.repo} @ {found.sha[:12]}, {len(found.files)} files, "
                   f"{size_text(found.size)}" + (f" ({size_text(have)} already in the cache)" if have else "")
                   + f" -> {cache}")
        folders.append(download(found, environ, hf_token, model.name))
        click.echo(f"{model.name}: complete in {folders[-1]}")
    return folders

