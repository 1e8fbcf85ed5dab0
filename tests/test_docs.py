"""The documentation as a user meets it: the README short, its links and evidence in the repository,
the docs site built strictly (broken links, anchors and moved evidence fail it), the result tables
equal to their files, and every command's --help with an example."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MKDOCS = [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet"]


def test_the_readme_is_short_and_every_link_in_it_resolves():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    links = [t for t in re.findall(r"\]\(([^)\s]+)\)", text) if not re.match(r"^[a-z]+://", t)]
    assert len(links) >= 20
    for target in links:
        assert (ROOT / target.split("#")[0]).exists(), target
    for path in re.findall(r"`((?:results|bench|configs|src|tests|docs|scripts)/[^`\s*]+)`", text):
        assert (ROOT / path).exists(), path  # every file the README names as evidence is in the repository
    for heading in ("## Install", "## Quickstart", "## Your model on one GPU and on eight", "## NVIDIA's pivot datasets",
                    "## What it has been shown to do, and what has not been run", "## License and citation"):
        assert heading in text


def test_the_docs_site_builds_strictly(tmp_path):
    res = subprocess.run([*MKDOCS, "-d", str(tmp_path / "site")], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "NO_MKDOCS_2_WARNING": "1"}, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    site = tmp_path / "site"
    cli = (site / "reference" / "cli" / "index.html").read_text()
    assert "pivotrl lab run" in cli and "Example:" in cli  # generated from the Typer app
    config = (site / "reference" / "config" / "index.html").read_text()
    assert "lambda_diff" in config and "max_restarts" in config and "epsilon_high" in config
    assert (site / "bench" / "results" / "long_context_grpo.json").is_file()  # evidence published beside the pages
    assert "load_trajectories" in (site / "reference" / "api" / "index.html").read_text()


def test_a_page_pointing_to_a_moved_file_fails_the_build(tmp_path):
    """The same site in a copy of the repository whose docs gained a page naming a file that is not
    there: the build stops and names it."""
    for name in ("results", "bench", "configs", "src", "tests"):
        (tmp_path / name).symlink_to(ROOT / name)
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    (tmp_path / "docs" / "moved.md").write_text("# Moved\n\nThe figure is in `results/lab/no_such_claims.json`.\n")
    res = subprocess.run([*MKDOCS, "-d", str(tmp_path / "site")], cwd=tmp_path, capture_output=True, text=True,
                         env={**os.environ, "NO_MKDOCS_2_WARNING": "1"}, timeout=600)
    assert res.returncode != 0
    assert "docs/moved.md: points to 'results/lab/no_such_claims.json'" in res.stdout + res.stderr


def test_the_result_tables_are_generated_from_their_files(tmp_path):
    res = subprocess.run([sys.executable, "scripts/results_tables.py", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import results_tables
    finally:
        sys.path.pop(0)
    stale = (ROOT / "README.md").read_text().replace("-2.8 [-4.5, -1.2]", "+2.8 [+1.2, +4.5]")
    assert results_tables.render(stale) == (ROOT / "README.md").read_text()  # a typed figure is put back


def test_every_command_s_help_has_an_example_and_lists_its_keys():
    import typer
    from typer.testing import CliRunner

    from pivotrl.cli import app

    root = typer.main.get_command(app)
    ctx = type(root).context_class(root)
    seen = []

    def walk(cmd, path):
        if hasattr(cmd, "list_commands"):
            for name in cmd.list_commands(ctx):
                walk(cmd.get_command(ctx, name), [*path, name])
            return
        out = CliRunner().invoke(app, [*path, "--help"]).output
        assert "Example:" in out, path
        seen.append(path)

    walk(root, [])
    assert len(seen) >= 25
    train = CliRunner().invoke(app, ["train", "--help"]).output
    assert "lambda_diff (float, default 0.75)" in train and "--key_name or --key-name" in train
    assert "max_restarts (int, default 3)" in CliRunner().invoke(app, ["profile", "--help"]).output


def test_lab_run_writes_under_runs_and_refuses_a_committed_results_folder():
    from typer.testing import CliRunner

    from pivotrl.cli import app

    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("needs a git checkout")
    res = CliRunner().invoke(app, ["lab", "run", "--preset", "tiny", "-o", str(ROOT / "results" / "lab-v3" / "search")])
    assert res.exit_code != 0 and "committed to git" in str(res.exception or res.output)
    assert "[default: runs/lab]" in CliRunner().invoke(app, ["lab", "run", "--help"]).output
