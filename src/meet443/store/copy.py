"""``meet443 db copy``: a single node's SQLite store into PostgreSQL (docs/cluster.md).

Every meeting (ended and deleted ones too: their rooms keep refusing joins) and every API key (its
digest: the keys people hold keep working) is copied in one transaction; the epoch sequence is raised
past the SQLite epoch, so chat ids never repeat those of the single node's runs. Running it again
adds only what is new, and carries over meetings ended or deleted and keys revoked since; it never
undoes anything in PostgreSQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from meet443.exceptions import ConfigError
from meet443.store.postgres import PostgresStore
from meet443.store.sqlite import DB_FILE_NAME, SqliteStore

__all__ = ["CopyCounts", "copy_sqlite_to_postgres"]


@dataclass(frozen=True, slots=True)
class CopyCounts:
    meetings: int
    meetings_added: int
    meetings_updated: int
    keys: int
    keys_added: int
    keys_updated: int
    epoch: int

    @property
    def changed(self) -> bool:
        return any((self.meetings_added, self.meetings_updated, self.keys_added, self.keys_updated))

    def summary(self) -> str:
        if not self.changed:
            return (
                f"nothing new to copy: all {self.meetings} meetings and {self.keys} API keys are already "
                "in PostgreSQL"
            )
        return (
            f"copied {self.meetings_added} new meetings and updated {self.meetings_updated} "
            f"(of {self.meetings}); copied {self.keys_added} new API keys and updated {self.keys_updated} "
            f"(of {self.keys}); server epoch at least {self.epoch}"
        )


def sqlite_path(source: Path) -> Path:
    """``source`` is a data dir or the SQLite file itself; it must exist (copying never creates one)."""
    path = source / DB_FILE_NAME if source.is_dir() else source
    if not path.is_file():
        raise ConfigError(f"no SQLite meetings store at {path}")
    return path


async def copy_sqlite_to_postgres(source: Path, target: PostgresStore) -> CopyCounts:
    sqlite = SqliteStore(sqlite_path(source))
    try:
        meetings, keys, epoch = sqlite.file.export()
    finally:
        await sqlite.close()
    added, updated, keys_added, keys_updated = await target.import_rows(meetings, keys, epoch)
    return CopyCounts(len(meetings), added, updated, len(keys), keys_added, keys_updated, epoch)
