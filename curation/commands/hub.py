"""`curate push`: a catalog version to the Hugging Face Hub, as a tag or a branch `vN`."""

from __future__ import annotations

from typing import Optional

import typer

from curation.cli import CatalogOption, JsonOption, app, catalog_path, console, fail, print_json


@app.command("push")
def push(
    ref: str = typer.Argument(..., help="NAME or NAME@vN"),
    repo: str = typer.Option(..., "--repo", help="Hub dataset repository, ORG/NAME (created when missing)"),
    as_: str = typer.Option("tag", "--as", help="tag: commit to main and tag it vN; branch: commit to branch vN"),
    private: bool = typer.Option(False, "--private", help="Create the repository private"),
    token: Optional[str] = typer.Option(None, "--token", help="Hub token [default: HF_TOKEN or the saved login]"),
    dry_run: bool = typer.Option(False, "--dry-run", help="Check the version and print the commit; send nothing"),
    catalog: Optional[str] = CatalogOption,
    as_json: bool = JsonOption,
) -> None:
    """Upload a version folder (card, splits, lineage, plots) to the Hub after checking every file."""
    from curation.catalog import Catalog, CatalogError
    from curation.hub import push_plan, push_version

    root = catalog_path(catalog)
    if not (root / "catalog.duckdb").is_file():
        fail(f"no catalog at {root}", file=root, hint="see `curate ls --catalog DIR`")
    if as_ not in ("tag", "branch"):
        fail(f"--as is tag or branch, not {as_!r}")
    cat = Catalog(root)
    try:
        if dry_run:
            result = {"dry_run": True, **push_plan(cat, ref, repo, as_=as_).to_dict()}
        else:
            result = push_version(cat, ref, repo, as_=as_, private=private, token=token)
    except CatalogError as exc:
        fail(str(exc))
    except Exception as exc:  # huggingface_hub's HTTP, offline-mode and auth errors
        if type(exc).__module__.split(".")[0] not in ("huggingface_hub", "requests", "httpx"):
            raise
        fail(f"push to {repo} failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
             hint="check the network, HF_HUB_OFFLINE and a token with write access (--token or `hf auth login`)")
    if as_json:
        print_json(result)
        return
    where = f"tag {result['tag']}" if result["tag"] else f"branch {result['revision']}"
    verb = "would push" if dry_run else "pushed"
    console.print(f"{verb} {result['ref']} to {repo} as {where}: {len(result['add'])} files, "
                  f"{len(result['delete'])} stale files deleted" + (f"; {result['commit']}" if not dry_run else ""))
    if dry_run:  # the commit itself: its message and every file it adds or deletes
        console.print(f"message: {result['message']}")
        for name in result["add"]:
            console.print(f"  add    {name}")
        for name in result["delete"]:
            console.print(f"  delete {name}")
