"""`curate doctor`: compare a catalog's database with its files, and repair what is safe to repair.

The version folders' manifests are the immutable record of what was published; the database
indexes them. The doctor verifies every version (each file's sha256, size and row count against
its manifest, the pairs' content fingerprint against the database), lists version folders the database
does not know, database rows whose folder is gone, and leftovers of killed processes. It changes
nothing unless asked: `fix` moves an unreadable database aside, rebuilds missing rows from intact
manifests and marks committed manifests; `clean` deletes leftovers (version folders whose manifest
says never committed, temporary folders of dead processes, damaged stage artifacts).
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from curation.catalog import (
    LEGACY_PAIRS,
    TMP_DIR,
    VERSION_DIR,
    Catalog,
    CatalogError,
    fingerprint_problem,
    manifest_state,
    mark_committed,
    read_manifest,
    verify_file,
)
from curation.store import DAMAGED_SUFFIX, artifact_problem, pid_alive, writer_pid


@dataclass
class Finding:
    kind: str  # database | damaged | orphan_row | unlisted | uncommitted | leftover | bad_artifact
    path: str
    message: str
    action: str | None = None  # what was done: rebuilt, marked committed, removed, moved aside

    @property
    def resolved(self) -> bool:
        return self.action is not None


@dataclass
class DoctorReport:
    catalog: str
    versions_checked: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(f.resolved for f in self.findings)

    def to_dict(self) -> dict[str, Any]:
        return {"catalog": self.catalog, "ok": self.ok, "versions_checked": self.versions_checked,
                "findings": [asdict(f) for f in self.findings]}


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def doctor(root: str | Path, *, fix: bool = False, clean: bool = False, full: bool = True) -> DoctorReport:
    """Check the catalog at `root`; `fix` / `clean` repair as described in the module docstring."""
    root = Path(root)
    if not root.is_dir():
        raise CatalogError(f"no catalog at {root}: the folder does not exist")
    report = DoctorReport(str(root.resolve()))
    cat = Catalog(root)
    with cat._lock(exclusive=fix or clean):
        con = _open_database(cat, report, fix)
        try:
            listed = _check_listed(cat, con, report, fix, full) if con is not None else set()
            _check_folders(cat, con, listed, report, fix, clean, full)
        finally:
            if con is not None:
                con.close()
    _check_artifacts(cat, report, clean)
    return report


def _open_database(cat: Catalog, report: DoctorReport, fix: bool) -> Any:
    try:
        con = cat._connect(read_only=not fix)
        con.execute("SELECT count(*) FROM versions").fetchall()
        return con
    except Exception as exc:  # CatalogError from connect, duckdb.Error from a database without tables
        finding = Finding("database", str(cat.db_path), str(exc).splitlines()[0])
        report.findings.append(finding)
        if not fix:
            return None
    stamp = datetime.now().strftime("%Y%m%dT%H%M%S")
    for path in (cat.db_path, cat.db_path.with_name(cat.db_path.name + ".wal")):
        if path.exists():
            path.rename(path.with_name(f"{path.name}.damaged-{stamp}"))
    finding.action = (f"moved aside as {cat.db_path.name}.damaged-{stamp}; versions rebuilt from their manifests "
                      "(runs, models and evaluations were recorded only in it)")
    con = cat._connect(read_only=False)
    from curation.catalog import _DDL

    con.execute(_DDL)
    return con


def _check_version(cat: Catalog, folder: Path, manifest: dict[str, Any], full: bool, fingerprint: str | None = None) -> str | None:
    """Why the folder is not the version its manifest describes (None when it is)."""
    digests = manifest.get("digests") or {}
    split_rows = {e["path"]: e["rows"] for e in (manifest.get("splits") or {}).values()}
    for name in dict.fromkeys([*(manifest.get("files") or []), *split_rows]):
        rows = split_rows.get(name, manifest.get("rows") if name == LEGACY_PAIRS else None)
        why = verify_file(folder / name, digests.get(name), rows=rows, full=full)
        if why:
            return f"{name} {why}"
    expected = fingerprint or manifest.get("fingerprint")
    if manifest.get("fingerprint") and fingerprint and manifest["fingerprint"] != fingerprint:
        return "its manifest names other content than the database recorded"
    if full and expected and (split_rows or (folder / LEGACY_PAIRS).is_file()):
        why = fingerprint_problem(folder, manifest, expected)
        return f"its pairs: {why}" if why else None
    return None


def _check_listed(cat: Catalog, con: Any, report: DoctorReport, fix: bool, full: bool) -> set[tuple[str, int]]:
    rows = con.execute("SELECT name, version, path, fingerprint FROM versions ORDER BY name, version").fetchall()
    for name, version, rel, fingerprint in rows:
        folder = cat.root / rel
        report.versions_checked += 1
        if not folder.is_dir():
            report.findings.append(Finding("orphan_row", str(folder), f"the database lists {name}@v{version} but its "
                                           "folder is gone: restore it from a backup"))
            continue
        try:
            manifest = read_manifest(folder)
        except CatalogError as exc:
            report.findings.append(Finding("damaged", str(folder), str(exc)))
            continue
        why = _check_version(cat, folder, manifest, full, fingerprint)
        if why:
            report.findings.append(Finding("damaged", str(folder), f"{name}@v{version}: {why}; restore the folder from a backup"))
        elif manifest.get("committed") is False:
            finding = Finding("uncommitted", str(folder), f"{name}@v{version} is committed but its manifest does not say so")
            if fix:
                mark_committed(folder)
                finding.action = "marked committed"
            report.findings.append(finding)
    return {(n, int(v)) for n, v, _, _ in rows}


def _check_folders(cat: Catalog, con: Any, listed: set, report: DoctorReport, fix: bool, clean: bool, full: bool) -> None:
    if not cat.datasets_dir.is_dir():
        return
    for ds in sorted(cat.datasets_dir.iterdir()):
        if not ds.is_dir():
            continue
        versions = sorted((int(m.group(1)), e) for e in ds.iterdir() if (m := VERSION_DIR.match(e.name)))
        for number, folder in versions:
            if (ds.name, number) not in listed:
                _unlisted(cat, con, ds.name, number, folder, report, fix, clean, full)
        for entry in sorted(ds.iterdir()):
            m = TMP_DIR.match(entry.name)
            if m and not pid_alive(int(m.group(1))):
                finding = Finding("leftover", str(entry), f"temporary folder of a killed publish ({_size(entry)} bytes)")
                if clean:
                    shutil.rmtree(entry, ignore_errors=True)
                    finding.action = "removed"
                report.findings.append(finding)


def _unlisted(cat: Catalog, con: Any, name: str, number: int, folder: Path, report: DoctorReport,
              fix: bool, clean: bool, full: bool) -> None:
    ref = f"{name}@v{number}"
    state = manifest_state(folder)
    if state == "pending":
        finding = Finding("uncommitted", str(folder), f"{ref} was never committed (a publish was killed); "
                          f"{_size(folder)} bytes nobody can see")
        if clean:
            shutil.rmtree(folder)
            finding.action = "removed"
        report.findings.append(finding)
        return
    try:
        manifest = read_manifest(folder)
        if manifest.get("name") != name or manifest.get("version") != number:
            raise CatalogError(f"its manifest describes {manifest.get('name')}@v{manifest.get('version')}")
        why = _check_version(cat, folder, manifest, full)
    except CatalogError as exc:
        why = str(exc)
    if why:
        report.findings.append(Finding("unlisted", str(folder), f"{ref} is not in the database and cannot be "
                                       f"restored: {why}; nothing was changed"))
        return
    finding = Finding("unlisted", str(folder), f"{ref} is published (its manifest and files are intact) but the "
                      "database does not list it (lost or restored from an older backup)")
    if fix and con is not None:
        created = datetime.fromisoformat(str(manifest["created_at"]).removesuffix("Z"))
        cat._commit_version(con, manifest, folder, {}, manifest.get("recipe"), created)
        if manifest.get("run_id"):
            con.execute("INSERT INTO lineage VALUES (?, ?, 'run', ?)", [manifest["ref"], f"run:{manifest['run_id']}", created])
        if manifest.get("committed") is not True:
            mark_committed(folder)
        finding.action = ("rebuilt from its manifest; models trained on it and their evaluations were recorded only "
                          "in the database: each model folder's curate_run.json keeps its run")
    report.findings.append(finding)


def _check_artifacts(cat: Catalog, report: DoctorReport, clean: bool) -> None:
    if not cat.store.root.is_dir():
        return
    for path in sorted(cat.store.root.glob("*/*")):
        if path.name.endswith(".parquet"):
            why = artifact_problem(path)
            if why is None:
                continue
            finding = Finding("bad_artifact", str(path), f"stage artifact {why}; the stage recomputes it")
        elif path.name.endswith(DAMAGED_SUFFIX):
            finding = Finding("leftover", str(path), f"damaged artifact set aside ({path.stat().st_size} bytes)")
        elif path.name.endswith(".tmp") and (pid := writer_pid(path)) is not None and not pid_alive(pid):
            finding = Finding("leftover", str(path), f"partial write of a killed process ({path.stat().st_size} bytes)")
        else:
            continue
        if clean:
            path.unlink(missing_ok=True)
            finding.action = "removed"
        report.findings.append(finding)

