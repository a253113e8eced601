"""The docs: README is the front page (under 10 KB), docs/ holds the reference, and the site builds with
`mkdocs build --strict` (a broken link, anchor or page missing from the nav fails it)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_site_builds_strict(tmp_path: Path) -> None:
    mkdocs = Path(sys.executable).parent / "mkdocs"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # Material 9.8 prints an end-of-life notice otherwise
    done = subprocess.run([str(mkdocs), "build", "--strict", "--site-dir", str(tmp_path / "site")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    assert (tmp_path / "site" / "troubleshooting" / "index.html").is_file()


def test_readme_is_a_front_page_and_the_site_home_follows_it() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.encode()) < 10_000
    home = (ROOT / "docs" / "index.md").read_text(encoding="utf-8").split("\n", 1)[1]
    assert home == readme.replace("](docs/", "](")
    for target in re.findall(r"\]\((docs/[^)#]+)", readme):
        assert (ROOT / target).is_file(), target


def test_commands_in_the_docs_run_from_a_fresh_clone() -> None:
    """`confgen` is not on PATH: a page shows `./runMe.sh <command>` or `.venv/bin/confgen`."""
    bare = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        fence = False
        for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
            if line.lstrip().startswith("```"):
                fence = not fence
            elif fence and re.match(r"^\s*(\$ )?confgen ", line):
                bare.append(f"{page.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not bare, "\n".join(bare)
