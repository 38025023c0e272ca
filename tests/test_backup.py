"""Backup and restore on SQLite and PostgreSQL: every table of the database comes back exactly,
into the same deployment or into a new folder; the other dialect and a database holding records
are refused unless forced; the ``crm backup`` and ``crm restore`` commands."""

from __future__ import annotations

import zipfile

import pytest

import crmcore
from crmcore.auth import SYSTEM
from crmcore.backup import BackupError, backup, read_manifest, restore
from tests.conftest import crm


async def _tables(dep) -> dict[str, list[tuple]]:
    """Every table of the database with its rows, in a stable order: what must come back."""
    if dep.db.dialect == "sqlite":
        names = [r[0] for r in await dep.db.fetch(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
            "AND name NOT LIKE '%__search%' ORDER BY name")]
    else:
        names = [r[0] for r in await dep.db.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY table_name")]
    dump = {}
    for name in names:
        rows = await dep.db.fetch(f'SELECT * FROM "{name}"')
        dump[name] = sorted((tuple(str(v) for v in row) for row in rows))
    return dump


async def _fill(dep) -> None:
    await dep.add_custom_field("contact", crmcore.Field(name="loyalty", type="choice", choices=["gold", "silver"]))
    user = await dep.auth.create_user(name="Ann", email="ann@example.com", password="ann password 123",
                                      role="agent", actor=SYSTEM)
    company = await dep.records.create("company", {"name": "Acme"})
    contact = await dep.records.create("contact", {"last_name": "Kaya", "phone": "+90 532 123 45 67",
                                                   "loyalty": "gold", "company": company["id"], "owner_id": user["id"]})
    await dep.records.create("deal", {"name": "Windows", "amount": {"amount": "1200.50", "currency": "EUR"},
                                      "contact": contact["id"]})
    await dep.records.update("contact", contact["id"], {"city": "İzmir"})
    await dep.automation.create({"name": "welcome", "entity": "contact", "trigger": {"type": "created"},
                                 "actions": [{"type": "set_field", "field": "job_title", "value": "Lead"}]}, actor=SYSTEM)
    await dep.records.bulk_create("contact", [{"last_name": f"Bulk {i}"} for i in range(50)])


async def test_backup_and_restore_give_back_every_table_exactly(make_deployment, tmp_path):
    dep = await make_deployment(region="TR")
    await _fill(dep)
    before = await _tables(dep)
    url = None if dep.db.dialect == "sqlite" else dep.db.url
    made = await backup(dep.path, tmp_path / "backups", database_url_=url)
    assert made.suffix == ".crmbackup" and made.parent == tmp_path / "backups"
    manifest = read_manifest(made)
    assert manifest["dialect"] == dep.db.dialect and manifest["crmcore"] == crmcore.__version__
    with zipfile.ZipFile(made) as archive:
        assert {"manifest.json", "crm.toml", manifest["database"]} == set(archive.namelist())

    # Changes after the backup: gone once it is restored.
    await dep.records.create("contact", {"last_name": "After the backup"})
    [first] = (await dep.records.list("contact", crmcore.ListQuery(limit=1))).items
    await dep.records.delete("contact", first["id"])
    path = dep.path
    await dep.close()
    with pytest.raises(BackupError, match="holds records"):
        await restore(path, made, database_url_=url)
    await restore(path, made, force=True, database_url_=url)
    again = await make_deployment(path=path)
    assert await _tables(again) == before
    page = await again.records.list("contact", crmcore.ListQuery(search="kaya"))
    assert [c["loyalty"] for c in page.items] == ["gold"]  # the search index came back too
    await again.close()


async def test_restore_into_a_new_folder(make_deployment, tmp_path, crm_backend):
    dep = await make_deployment()
    await _fill(dep)
    before = await _tables(dep)
    url = None if dep.db.dialect == "sqlite" else dep.db.url
    made = await backup(dep.path, tmp_path / "one.crmbackup", database_url_=url)
    other = crm_backend.new_database_url()
    await restore(tmp_path / "copy", made, database_url_=other)
    assert (tmp_path / "copy" / "crm.toml").exists()
    copy = await crmcore.Deployment.open(tmp_path / "copy", database_url=other)
    try:
        assert await _tables(copy) == before
    finally:
        await copy.close()
    if dep.db.dialect == "sqlite":  # a SQLite backup does not go into PostgreSQL, nor the reverse
        with pytest.raises(BackupError, match="other|sqlite"):
            await restore(tmp_path / "elsewhere", made, database_url_="postgresql://nobody@127.0.0.1:1/none")


def test_backup_and_restore_commands(tmp_path, monkeypatch):
    monkeypatch.delenv("CRM_DATABASE_URL", raising=False)
    shop = tmp_path / "shop"
    crm("init", str(shop), "--admin-email", "admin@example.com", "--admin-password-stdin", input="admin password 123\n")
    made = crm("backup", str(tmp_path / "out"), deployment=shop)
    assert "Backed up to" in made.output
    [file] = list((tmp_path / "out").glob("*.crmbackup"))
    refused = crm("restore", str(file), deployment=shop, input="n\n", ok=False)
    assert "Aborted" in refused.output and "holds records" in refused.output
    done = crm("restore", str(file), "--yes", deployment=shop)
    assert "Restored shop (sqlite" in done.output
    bad = tmp_path / "bad.crmbackup"
    bad.write_text("not a zip")
    assert "not a crmcore backup" in crm("restore", str(bad), deployment=shop, ok=False).output
