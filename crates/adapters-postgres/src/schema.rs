//! The database's migration history against the migrations this build
//! embeds: what `tally migrate --status` lists, what `serve --no-migrate`
//! checks at start-up and what the readiness check asks.
//!
//! Reading it never writes: a database that was never migrated has no
//! history table yet, and every migration is pending.

use sqlx::PgPool;
use tally_domain::error::StoreError;
use time::OffsetDateTime;

use crate::error::map_sqlx_error;

/// Where one migration stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MigrationState {
    Applied {
        installed_on: OffsetDateTime,
    },
    /// Known to this build, not in the database.
    Pending,
    /// Applied from a file that differs from this build's (its checksum).
    Modified {
        installed_on: OffsetDateTime,
    },
    /// Recorded as started but not finished.
    Failed {
        installed_on: OffsetDateTime,
    },
    /// In the database but not in this build: applied by a newer tally.
    Unknown {
        installed_on: OffsetDateTime,
    },
}

impl MigrationState {
    pub fn label(&self) -> &'static str {
        match self {
            Self::Applied { .. } => "applied",
            Self::Pending => "pending",
            Self::Modified { .. } => "modified",
            Self::Failed { .. } => "failed",
            Self::Unknown { .. } => "unknown to this tally",
        }
    }

    pub fn installed_on(&self) -> Option<OffsetDateTime> {
        match self {
            Self::Pending => None,
            Self::Applied { installed_on }
            | Self::Modified { installed_on }
            | Self::Failed { installed_on }
            | Self::Unknown { installed_on } => Some(*installed_on),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationEntry {
    pub version: i64,
    pub description: String,
    pub state: MigrationState,
}

impl MigrationEntry {
    /// `0002 usage rollup`, as the migration's file is named.
    pub fn name(&self) -> String {
        format!("{:04} {}", self.version, self.description)
    }
}

/// Every migration of this build and of the database, by version.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MigrationStatus {
    pub entries: Vec<MigrationEntry>,
}

impl MigrationStatus {
    /// Whether the schema is the one this build expects: every migration it
    /// knows applied, finished and unmodified. Migrations only a newer tally
    /// knows do not count against it (a rolling upgrade migrates first).
    pub fn is_current(&self) -> bool {
        self.behind().next().is_none()
    }

    /// The migrations that keep the schema from being current.
    pub fn behind(&self) -> impl Iterator<Item = &MigrationEntry> {
        self.entries.iter().filter(|e| {
            matches!(
                e.state,
                MigrationState::Pending | MigrationState::Modified { .. } | MigrationState::Failed { .. }
            )
        })
    }

    pub fn with_state(&self, label: &str) -> impl Iterator<Item = &MigrationEntry> {
        self.entries.iter().filter(move |e| e.state.label() == label)
    }

    /// One line for people: `schema current (2 applied)`, or what is wrong.
    pub fn summary(&self) -> String {
        let count = |label| self.with_state(label).count();
        let names = |label| {
            self.with_state(label)
                .map(MigrationEntry::name)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut parts = Vec::new();
        for label in ["pending", "failed", "modified"] {
            if count(label) > 0 {
                parts.push(format!("{} {label} ({})", count(label), names(label)));
            }
        }
        let unknown = count("unknown to this tally");
        let newer = if unknown > 0 {
            format!(
                "; {unknown} applied by a newer tally ({})",
                names("unknown to this tally")
            )
        } else {
            String::new()
        };
        if parts.is_empty() {
            format!("schema current ({} applied{newer})", count("applied"))
        } else {
            format!("schema not current: {}{newer}", parts.join(", "))
        }
    }
}

/// A migration as this build knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Known {
    pub version: i64,
    pub description: String,
    pub checksum: Vec<u8>,
}

/// A row of the database's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub version: i64,
    pub description: String,
    pub installed_on: OffsetDateTime,
    pub success: bool,
    pub checksum: Vec<u8>,
}

/// The migrations embedded in this build (up migrations only).
pub fn known_migrations() -> Vec<Known> {
    crate::MIGRATOR
        .iter()
        .filter(|m| !m.migration_type.is_down_migration())
        .map(|m| Known {
            version: m.version,
            description: m.description.to_string(),
            checksum: m.checksum.to_vec(),
        })
        .collect()
}

/// Sets the history beside the known migrations, one entry per version.
pub fn compare(known: &[Known], recorded: &[Recorded]) -> MigrationStatus {
    let mut entries: Vec<MigrationEntry> = known
        .iter()
        .map(|k| {
            let state = match recorded.iter().find(|r| r.version == k.version) {
                None => MigrationState::Pending,
                Some(r) if !r.success => MigrationState::Failed {
                    installed_on: r.installed_on,
                },
                Some(r) if r.checksum != k.checksum => MigrationState::Modified {
                    installed_on: r.installed_on,
                },
                Some(r) => MigrationState::Applied {
                    installed_on: r.installed_on,
                },
            };
            MigrationEntry {
                version: k.version,
                description: k.description.clone(),
                state,
            }
        })
        .collect();
    entries.extend(
        recorded
            .iter()
            .filter(|r| known.iter().all(|k| k.version != r.version))
            .map(|r| MigrationEntry {
                version: r.version,
                description: r.description.clone(),
                state: MigrationState::Unknown {
                    installed_on: r.installed_on,
                },
            }),
    );
    entries.sort_by_key(|e| e.version);
    MigrationStatus { entries }
}

/// Reads the history (none when the table does not exist yet) and compares
/// it with this build's migrations. Fails only when the database does not
/// answer or the history cannot be read.
pub async fn migration_status(pool: &PgPool) -> Result<MigrationStatus, StoreError> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(pool)
        .await
        .map_err(map_sqlx_error)?;
    let recorded = if exists {
        sqlx::query_as::<_, (i64, String, OffsetDateTime, bool, Vec<u8>)>(
            "SELECT version, description, installed_on, success, checksum \
             FROM _sqlx_migrations ORDER BY version",
        )
        .fetch_all(pool)
        .await
        .map_err(map_sqlx_error)?
        .into_iter()
        .map(
            |(version, description, installed_on, success, checksum)| Recorded {
                version,
                description,
                installed_on,
                success,
                checksum,
            },
        )
        .collect()
    } else {
        Vec::new()
    };
    Ok(compare(&known_migrations(), &recorded))
}

#[cfg(test)]
mod tests;
