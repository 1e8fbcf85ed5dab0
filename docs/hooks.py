"""MkDocs hooks (mkdocs.yml `hooks:`): the site links to the evidence, and is generated where it can be.

- Evidence: the pages point to files of the repository (results, benchmarks, configs, source,
  tests), by links (written as repository paths, so that they work on GitHub too) or as
  `code spans` naming a path. Each such file is published with the site at
  its path in the repository, a code span naming one becomes a link to it, and the results READMEs
  (the lab's notebook) are pages of the site. A file that has moved fails the build (with
  `strict: true`, so does a broken link or anchor anywhere).
- Reference: `reference/cli.md` (every command's `--help`, from the Typer app) and
  `reference/config.md` (every config field with its type, default and help, from the dataclasses)
  are written at build time, so they cannot go stale.

Why a hook and not a plugin: MkDocs' own hooks do it in one short file (no plugin to maintain).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
EVIDENCE = ("results", "bench", "configs", "src", "tests")
LINK = re.compile(r"(\]\()([^)\s]+)(\))")
# a code span naming a file of the repository, e.g. `results/lab-v3/claims.json` (not inside a link's text)
SPAN = re.compile(r"(?<![\[\w])`((?:%s)/[^`\s]*)`(?!\])" % "|".join(EVIDENCE))
# `results/NAME/...`, `phase4_stepN_DOMAIN.json`: a pattern, not a file
PLACEHOLDER = re.compile(r"[*{}<>$]|\.\.\.|(?<![A-Z])(?!README|LICENSE)[A-Z]{3,}|[a-z]N(?:_|\b)")
GENERATED = ("reference/cli.md", "reference/config.md")


def _repo_path(virtual: str) -> str:
    """The repository path of a file of the site (docs/ is the site's root; evidence keeps its path)."""
    return virtual if virtual.split("/")[0] in EVIDENCE else "docs/" + virtual


def _virtual(repo_path: str) -> str | None:
    if repo_path.startswith("docs/"):
        return repo_path[len("docs/"):]
    if repo_path == "README.md":
        return "index.md"  # the repository's front page: the site's
    return repo_path if repo_path.split("/")[0] in EVIDENCE else None


def _resolve(target: str, page_virtual: str) -> str:
    """A relative link of a page, as the repository reads it (links are written as they work when
    the Markdown is read in the repository, on GitHub say): its repository path."""
    return os.path.normpath(os.path.join(os.path.dirname(_repo_path(page_virtual)), target))


def _published_file(repo_path: str) -> str | None:
    """The file a repository path is published as: the path itself, a folder's README.md, or None
    (a folder without one is no page)."""
    if not (ROOT / repo_path).is_dir():
        return repo_path
    return f"{repo_path}/README.md" if (ROOT / repo_path / "README.md").exists() else None


def _targets(text: str, page_virtual: str) -> list[tuple[str, str]]:
    """(link as written, its repository path) for each relative link and evidence code span."""
    out = []
    for m in LINK.finditer(text):
        target = m.group(2).split("#")[0]
        if not target or re.match(r"^[a-z][a-z0-9+.-]*:", target):
            continue
        out.append((m.group(2), _resolve(target, page_virtual)))
    for m in SPAN.finditer(text):
        if not PLACEHOLDER.search(m.group(1)):
            out.append((m.group(1), m.group(1).rstrip("/")))
    return out


def on_files(files, config):
    """Publish the evidence the pages point to (following links through the results READMEs), and
    write the reference pages."""
    for name, write in zip(GENERATED, (cli_reference, config_reference)):
        files.append(File.generated(config, name, content=write()))
    published = {f.src_uri for f in files}
    todo = [f.src_uri for f in files if f.src_uri.endswith(".md") and f.src_uri not in GENERATED]
    for path in _nav_paths(config["nav"]):  # the results READMEs the navigation names
        if path.split("/")[0] in EVIDENCE and path not in published:
            files.append(File(path, str(ROOT), config["site_dir"], config["use_directory_urls"]))
            todo.append(path)
    seen = set(todo)
    missing = []
    while todo:
        virtual = todo.pop()
        text = (ROOT / _repo_path(virtual)).read_text(encoding="utf-8")
        for written, repo_path in _targets(text, virtual):
            if _virtual(repo_path) in GENERATED:
                continue
            if not (ROOT / repo_path).exists():
                missing.append(f"{_repo_path(virtual)}: points to {written!r} ({repo_path})")
                continue
            published_as = _published_file(repo_path)
            target = _virtual(published_as) if published_as else None
            if target is None or target in seen or target in published:
                continue
            seen.add(target)
            evidence = target.split("/")[0] in EVIDENCE
            files.append(File(target, str(ROOT if evidence else DOCS), config["site_dir"], config["use_directory_urls"]))
            if target.endswith(".md"):
                todo.append(target)
    if missing:
        raise PluginError("files the pages point to are not in the repository (moved or removed):\n  "
                          + "\n  ".join(sorted(set(missing))))
    return files


def _nav_paths(nav) -> list[str]:
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, dict):
        return [p for v in nav.values() for p in _nav_paths(v)]
    return [p for v in (nav or []) for p in _nav_paths(v)]


def on_page_markdown(markdown, page, config, files):
    """Links, written as repository paths, become links of the site (the same file, published at its
    virtual place); evidence code spans become links to the published file."""
    virtual = page.file.src_uri
    here = os.path.dirname(virtual)

    def relink(m):
        target, _, anchor = m.group(2).partition("#")
        if not target or re.match(r"^[a-z][a-z0-9+.-]*:", target):
            return m.group(0)
        repo_path = _resolve(target, virtual)
        site = _virtual(_published_file(repo_path) or repo_path)
        if site is None:
            return m.group(0)
        new = os.path.relpath(site, here or ".")
        return f"{m.group(1)}{new}{'#' + anchor if anchor else ''}{m.group(3)}"

    def span_link(m):
        path = m.group(1)
        if PLACEHOLDER.search(path):
            return m.group(0)
        published = _published_file(path.rstrip("/"))
        if published is None:
            return m.group(0)
        return f"[`{m.group(1)}`]({os.path.relpath(published, here or '.')})"

    markdown = LINK.sub(relink, markdown)
    return SPAN.sub(span_link, markdown)


def cli_reference() -> str:
    """Every command's `--help`, as the command prints it."""
    import typer
    from typer.testing import CliRunner

    from pivotrl.cli import app

    parts = ["# Command line", "", "Every command's `--help`, generated from the command-line app when the site is "
             "built. Config keys of `profile`, `train`, `sft`, `e2e` and `plan` are flags too, spelt `--key_name` "
             "or `--key-name` alike.", ""]
    root = typer.main.get_command(app)
    ctx = type(root).context_class(root)

    def walk(cmd, path):
        if path:
            res = CliRunner().invoke(app, [*path, "--help"], terminal_width=100, env={"COLUMNS": "100"})
            parts.extend([f"## pivotrl {' '.join(path)}", "", "```text", res.output.rstrip(), "```", ""])
        if hasattr(cmd, "list_commands"):
            for name in cmd.list_commands(ctx):
                walk(cmd.get_command(ctx, name), [*path, name])

    walk(root, [])
    return "\n".join(parts)


def config_reference() -> str:
    """Every config field, pivotrl's own apart from TRL's, with type, default and help."""
    from trl import GRPOConfig

    from pivotrl.config_fields import changed_defaults, field_docs, markdown_table
    from pivotrl.pivots.profile import ProfileConfig
    from pivotrl.train.options import E2EOptions, PivotRLOptions, SFTOptions
    from pivotrl.train.pivotrl_trainer import PivotRLRecipe

    out = ["# Config fields", "",
           "The keys of a YAML config (`--config FILE`) and the flags of the config-driven commands, generated from "
           "the dataclasses when the site is built. The trainers take every field of TRL's config class too "
           "([GRPOConfig](https://huggingface.co/docs/trl/grpo_trainer#trl.GRPOConfig), "
           "[SFTConfig](https://huggingface.co/docs/trl/sft_trainer#trl.SFTConfig)).", ""]
    for title, cls in (("`pivotrl profile` (ProfileConfig)", ProfileConfig),
                       ("`pivotrl train` (PivotRLOptions, on TRL's GRPOConfig)", PivotRLOptions),
                       ("`pivotrl sft` (SFTOptions, on TRL's SFTConfig)", SFTOptions),
                       ("`pivotrl e2e` (E2EOptions, on TRL's GRPOConfig)", E2EOptions)):
        out += [f"## {title}", "", markdown_table(field_docs(cls)), ""]
    out += ["## TRL's fields the PivotRL recipe sets (`train` and `e2e`)", "",
            "The defaults of NVIDIA's published recipe where they differ from TRL's (PivotRLRecipe):", "",
            markdown_table(changed_defaults(PivotRLRecipe, GRPOConfig)), ""]
    return "\n".join(out)
