"""Push a catalog version to the Hugging Face Hub: the version folder as it is (README.md card,
data/<split>.parquet, lineage tables, plots, manifest), one commit, the version named by a tag or
a branch `vN`, so `datasets.load_dataset("ORG/NAME", revision="vN")` reads what the catalog holds.

`push_plan` builds the commit without the network (the operations, the revision, the tag), after
a full check of the version's files, so what leaves is what was published; `push_version` carries
it out with huggingface_hub's HfApi.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

from curation.catalog import Catalog, CatalogError, VersionInfo, read_manifest

KEEP_REMOTE = (".gitattributes",)  # the Hub's own file in every repository


@dataclass
class PushPlan:
    repo: str
    ref: str
    revision: str  # the branch the commit goes to
    tag: str | None  # the tag created at that commit (as_="tag")
    message: str
    operations: list[Any] = field(default_factory=list)  # CommitOperationAdd / CommitOperationDelete

    def deleting(self, existing: Sequence[str]) -> "PushPlan":
        """With deletes of the revision's `existing` files that the version does not have (a file an
        older version had would otherwise stay beside this one's)."""
        from huggingface_hub import CommitOperationDelete

        added = {op.path_in_repo for op in self.operations}
        stale = [CommitOperationDelete(path_in_repo=name) for name in sorted(existing)
                 if name not in added and name not in KEEP_REMOTE]
        return PushPlan(self.repo, self.ref, self.revision, self.tag, self.message, self.operations + stale)

    def to_dict(self) -> dict[str, Any]:
        return {"repo": self.repo, "ref": self.ref, "revision": self.revision, "tag": self.tag, "message": self.message,
                "add": [op.path_in_repo for op in self.operations if type(op).__name__ == "CommitOperationAdd"],
                "delete": [op.path_in_repo for op in self.operations if type(op).__name__ == "CommitOperationDelete"]}


def push_plan(catalog: Catalog, ref: str | VersionInfo, repo: str, *, as_: Literal["tag", "branch"] = "tag",
              existing: Sequence[str] = ()) -> PushPlan:
    """The commit that makes `repo` hold exactly version `ref`: every file the manifest lists (checked
    byte for byte first), and deletes of the `existing` files of the revision no longer in it.

    as_="tag": the commit goes to `main` and tag `vN` names it (main shows the newest push);
    as_="branch": it goes to branch `vN` (created from main), leaving main alone.
    """
    from huggingface_hub import CommitOperationAdd

    if as_ not in ("tag", "branch"):
        raise CatalogError(f"push: as_ is 'tag' or 'branch', not {as_!r}")
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise CatalogError(f"push: --repo is ORG/NAME (a Hub dataset repository), not {repo!r}")
    info = catalog.verify_version(ref)  # CatalogError when a table, the card or a plot is not what was published
    manifest = read_manifest(info.path)
    if not manifest.get("splits"):
        raise CatalogError(f"{info.ref} was published before versions were Hub datasets (one pairs.parquet, no README.md "
                           "card): publish it again (e.g. `curate export` then `curate import`) to push it")
    files = list(dict.fromkeys([*manifest["files"], *(e["path"] for e in manifest["splits"].values())]))
    ops: list[Any] = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(info.path / name)) for name in files]
    name = f"v{info.version}"
    message = f"{info.ref}: {info.rows} pairs, fingerprint {info.fingerprint}"
    plan = PushPlan(repo=repo, ref=info.ref, revision="main" if as_ == "tag" else name,
                    tag=name if as_ == "tag" else None, message=message, operations=ops)
    return plan.deleting(existing)


def push_version(catalog: Catalog, ref: str, repo: str, *, as_: Literal["tag", "branch"] = "tag",
                 private: bool = False, token: str | None = None) -> dict[str, Any]:
    """Create the dataset repository if needed and push the version (see push_plan); returns the
    plan and the commit's URL. Needs the network and a token with write access."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    plan = push_plan(catalog, ref, repo, as_=as_)  # every check before the first request
    api.create_repo(repo, repo_type="dataset", private=private, exist_ok=True)
    if as_ == "branch":
        api.create_branch(repo, repo_type="dataset", branch=plan.revision, exist_ok=True)
    plan = plan.deleting(api.list_repo_files(repo, repo_type="dataset", revision=plan.revision))
    commit = api.create_commit(repo, repo_type="dataset", operations=plan.operations, commit_message=plan.message,
                               revision=plan.revision)
    if plan.tag:
        api.create_tag(repo, repo_type="dataset", tag=plan.tag, revision=commit.oid, tag_message=plan.message)
    return {**plan.to_dict(), "commit": commit.commit_url}
