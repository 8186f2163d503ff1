//! The schema migrations of both backends, embedded in the binary.
//!
//! Why not sqlx's `migrate!` macro: it was the only use of sqlx's `macros` feature, and
//! that feature compiles sqlx's SQLite driver (SQLite's C source included) and its
//! PostgreSQL driver a second time, for the compiler's host, on the critical path of a
//! first `scripts/run`. This module does at start what the macro did at compile time,
//! through sqlx's public [`Migration::new`]: the version and description come from the
//! file name (`0002_changes.sql`: version 2, "changes"), the checksum is the SHA-384 of
//! the text (what `_sqlx_migrations` records, so a database migrated by an earlier build
//! opens unchanged: `checksums_are_the_ones_earlier_builds_recorded` pins them), and a
//! file starting with `-- no-transaction` runs outside a transaction.
//!
//! Each list must name every file of its folder, in any order (sqlx sorts them by
//! version); `every_migration_file_is_embedded` reads the folders.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;

use sqlx::migrate::{MigrateError, Migration, MigrationSource, MigrationType, Migrator};
use sqlx::SqlSafeStr;

/// A migration file: its name and its text.
type File = (&'static str, &'static str);

macro_rules! embed {
    ($folder:literal, $($file:literal),+ $(,)?) => {
        &[$(($file, include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/", $folder, "/", $file)))),+]
    };
}

/// `server/migrations`, for SQLite.
pub const SQLITE: &[File] = embed!(
    "migrations",
    "0001_messages.sql",
    "0002_changes.sql",
    "0003_search_terms.sql"
);

/// `server/migrations_postgres`, for PostgreSQL.
pub const POSTGRES: &[File] = embed!("migrations_postgres", "0001_schema.sql");

/// The migrator for one backend's files.
pub async fn migrator(files: &'static [File]) -> Result<Migrator, MigrateError> {
    Migrator::new(Embedded(files)).await
}

#[derive(Debug)]
struct Embedded(&'static [File]);

/// A file name that is not `<version>_<description>.sql`.
#[derive(Debug, thiserror::Error)]
#[error("migration file name {0:?} is not <version>_<description>.sql")]
struct BadName(&'static str);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl MigrationSource<'static> for Embedded {
    fn resolve(
        self,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<Migration>, BoxError>> + Send + 'static>> {
        let migrations = self
            .0
            .iter()
            .map(|&(file, sql)| migration(file, sql).map_err(BoxError::from))
            .collect();
        Box::pin(std::future::ready(migrations))
    }
}

fn migration(file: &'static str, sql: &'static str) -> Result<Migration, BadName> {
    let (version, rest) = file.split_once('_').ok_or(BadName(file))?;
    let version: i64 = version.parse().map_err(|_| BadName(file))?;
    let description = rest.strip_suffix(".sql").ok_or(BadName(file))?;
    Ok(Migration::new(
        version,
        Cow::Owned(description.replace('_', " ")),
        MigrationType::Simple,
        sql.into_sql_str(),
        sql.starts_with("-- no-transaction"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn every_migration_file_is_embedded() {
        for (folder, files) in [("migrations", SQLITE), ("migrations_postgres", POSTGRES)] {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(folder);
            let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
                .unwrap()
                .map(|entry| entry.unwrap().file_name().into_string().unwrap())
                .filter(|name| name.ends_with(".sql"))
                .collect();
            on_disk.sort();
            let mut embedded: Vec<String> = files.iter().map(|(f, _)| f.to_string()).collect();
            embedded.sort();
            assert_eq!(embedded, on_disk, "{folder}: every file, and only those");
        }
    }

    #[tokio::test]
    async fn versions_and_descriptions_come_from_the_file_names() {
        let migrator = migrator(SQLITE).await.unwrap();
        let found: Vec<(i64, String, bool)> = migrator
            .iter()
            .map(|m| (m.version, m.description.to_string(), m.no_tx))
            .collect();
        assert_eq!(
            found,
            [
                (1, "messages".to_owned(), false),
                (2, "changes".to_owned(), false),
                (3, "search terms".to_owned(), false)
            ]
        );
        assert!(migration("messages.sql", "").is_err());
        assert!(migration("x_messages.sql", "").is_err());
        assert!(migration("1_messages.txt", "").is_err());
        let no_tx = migration("3_big_index.sql", "-- no-transaction\nCREATE INDEX ...").unwrap();
        assert!(no_tx.no_tx);
        assert_eq!(no_tx.description, "big index");
    }

    /// The checksums `sqlx::migrate!` computed for these files, as databases migrated by
    /// earlier builds hold them in `_sqlx_migrations`: a change to a file that was
    /// already applied (or to how checksums are computed) would make those databases
    /// refuse to open, so it fails here first.
    #[tokio::test]
    async fn checksums_are_the_ones_earlier_builds_recorded() {
        let sqlite = migrator(SQLITE).await.unwrap();
        let postgres = migrator(POSTGRES).await.unwrap();
        let sums: Vec<(i64, String)> = sqlite
            .iter()
            .chain(postgres.iter())
            .map(|m| (m.version, hex(&m.checksum)))
            .collect();
        assert_eq!(sums, RECORDED.map(|(v, s)| (v, s.to_owned())));
    }

    /// Read back from `_sqlx_migrations` of a database made by the build before this
    /// module (ee63926); PostgreSQL's, and SQLite's from 3 on, are the SHA-384 of their
    /// files, computed the same way.
    const RECORDED: [(i64, &str); 4] = [
        (1, "ac48f31971f20f3941720100ec916dc8cfae7ce9623f4f6a4d78905aa0220332aec5366af6120a216ebdf6cbbe300d68"),
        (2, "2d8df9636cde8ae062f959f7ffea275d8ec6d796218ccaa8681dcc34dddf6b7d7088f593135f75fcb63c7c02cfa2e81b"),
        (3, "561c3050012ac383a50d0f440ca929c849d4271596b1c2d3c8d9c17ff70c8294191e30551a8d14adfebb22b877a51124"),
        (1, "22b0cee67ded496456ff3f128a6eeca69f50e39bc7b6c7d521af0c3910aea4e8deab92437f9d4391916b6763722989d8"),
    ];
}
