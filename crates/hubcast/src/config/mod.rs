//! Every setting, its default, and validation that names the key.
//!
//! Settings are layered, later layers winning: built-in defaults, the TOML
//! file given with `--config`, `HUBCAST_*` environment variables, then
//! command-line flags. Clap reads a flag and its variable together (a flag
//! beats its variable), so the layers are: defaults < file < (env, flags).
//! TOML keys are the flag names with underscores (`max_message_bytes`).
//!
//! Each setting is declared once, in `settings.rs`; `declare.rs` makes of
//! that table the [`Config`] struct, its defaults, its checks, the `serve`
//! flags ([`ServeArgs`]) and [`settings()`], the list `--help` and a test
//! of README.md's settings table read.

use std::time::Duration;

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

mod check;
mod declare;
mod flag_value;
mod hooks;
#[cfg(test)]
mod readme;
mod rooms;
mod settings;
mod template;
#[cfg(test)]
mod tests;
mod webhooks;

pub use check::{check_all, check_file_and_env};
pub use declare::Setting;
pub use hooks::HooksTable;
pub use rooms::RoomTable;
pub use settings::{Config, ServeArgs, settings};
pub use template::init_file;
pub use webhooks::{EVENT_TYPES, WebhookTable};

/// Which engine serves rooms.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BrokerKind {
    /// In this process: one node.
    Memory,
    /// Redis: many nodes sharing one Redis.
    Redis,
    /// NATS JetStream: many nodes sharing one NATS (server or cluster).
    Nats,
}

/// Where the NATS engine's stream keeps the rooms' history.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum NatsStorage {
    /// On disk: history survives a NATS restart.
    File,
    /// In memory: faster, lost when NATS restarts (rooms start new epochs).
    Memory,
}

/// Log line format.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// A setting that cannot be used, named by its key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file or a value could not be read as the key's type.
    #[error("config: {0}")]
    Parse(String),
    /// A value was read but is out of range.
    #[error("config: {key}: {message}")]
    Invalid {
        /// The TOML key (flag name with underscores), or a `[[rooms]]`
        /// table's key as `rooms[N].key` (N from 1: the first table is
        /// `rooms[1]`).
        key: String,
        /// What is wrong and what is allowed.
        message: String,
    },
}

impl Config {
    /// Merges defaults, the optional TOML file and the flags/variables, then
    /// validates the result.
    pub fn load(args: &ServeArgs) -> Result<Config, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = &args.config {
            if !path.exists() {
                return Err(ConfigError::Parse(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            fig = fig.merge(Toml::file_exact(path));
        }
        fig = fig.merge(Serialized::defaults(args));
        let mut cfg: Config = fig.extract().map_err(|e| {
            declare::in_table(&e).unwrap_or_else(|| {
                // figment prefixes keys with the profile ("default."); users
                // never see profiles, so drop it.
                ConfigError::Parse(e.to_string().replace("default.", ""))
            })
        })?;
        cfg.validate()?;
        if cfg.node_id.is_empty() {
            cfg.node_id = format!("n-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        }
        Ok(cfg)
    }

    /// The heartbeat interval.
    pub(crate) fn heartbeat_interval(&self) -> Duration {
        Duration::from_secs(self.heartbeat)
    }

    /// How long a writer waits to coalesce frames (`write_delay_ms`).
    pub(crate) fn write_delay(&self) -> Duration {
        Duration::from_millis(self.write_delay_ms)
    }

    /// Silence after which a connection is closed with 4002.
    pub(crate) fn idle_timeout(&self) -> Duration {
        Duration::from_secs(2 * self.heartbeat + 5)
    }

    /// How long history and idempotency entries live.
    pub(crate) fn history_ttl(&self) -> Duration {
        Duration::from_secs(self.history_ttl)
    }
}
