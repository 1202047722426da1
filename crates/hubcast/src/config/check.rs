//! Reading the settings so that every bad key is named, not only the
//! first: `hubcast config check` and a SIGHUP reload. Each key of the file
//! and each `HUBCAST_*` variable is read on its own, then every check runs
//! on the result (the key checks of `settings.rs`, the token keys of
//! `crate::auth`, the `[[rooms]]` tables of `crate::rules`).

use std::path::Path;

use figment::providers::{Format, Toml};
use figment::{Figment, Provider};

use super::settings::KEYS;
use super::{Config, ConfigError, ServeArgs};

/// The settings from `file` (if any) under `args` (the flags and
/// variables, which win), or every problem found, each naming its key.
pub fn check_all(file: Option<&Path>, args: &ServeArgs) -> Result<Config, Vec<ConfigError>> {
    let mut bad = Vec::new();
    let mut config = Config::default();
    if let Some(path) = file {
        read_file(path, &mut config, &mut bad)?;
    }
    config.set_given(args);
    bad.extend(config.problems());
    // The token keys are read (files included) only when their own checks
    // passed: one problem per key.
    if let Err(e) = crate::auth::Auth::from_config(&config)
        && !bad.iter().any(|b| b.key() == e.key())
    {
        bad.push(e);
    }
    if bad.is_empty() { Ok(config) } else { Err(bad) }
}

/// Sets each key the file gives; a file that cannot be read or parsed is
/// the one problem returned at once (no key can be named in it).
fn read_file(
    path: &Path,
    config: &mut Config,
    bad: &mut Vec<ConfigError>,
) -> Result<(), Vec<ConfigError>> {
    if !path.exists() {
        return Err(vec![ConfigError::Parse(format!(
            "config file {} does not exist",
            path.display()
        ))]);
    }
    let file = Figment::from(Toml::file_exact(path));
    let data = file.data().map_err(|e| {
        vec![ConfigError::Parse(format!(
            "{}: {}",
            path.display(),
            e.to_string().replace("default.", "")
        ))]
    })?;
    for key in data.values().flat_map(|dict| dict.keys()) {
        if !KEYS.contains(&key.as_str()) {
            bad.push(ConfigError::Invalid {
                key: key.clone(),
                message: "unknown key (`hubcast config init` lists every key)".into(),
            });
        }
    }
    config.set_each(&file, bad);
    Ok(())
}

impl ConfigError {
    /// The key a problem names, if it names one.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } => Some(key),
            ConfigError::Parse(_) => None,
        }
    }
}

/// `hubcast config check`: the file (if any) under the `HUBCAST_*`
/// variables, each variable read on its own so that every bad one is
/// named too.
pub fn check_file_and_env(file: Option<&Path>) -> Result<Config, Vec<ConfigError>> {
    let mut bad = Vec::new();
    let args = ServeArgs::from_env_each(&mut bad);
    match check_all(file, &args) {
        Ok(config) if bad.is_empty() => Ok(config),
        Ok(_) => Err(bad),
        Err(more) => {
            // A variable that did not parse is unset in `args`; its key's
            // check may then complain of the default too: one line a key.
            let more: Vec<ConfigError> = more
                .into_iter()
                .filter(|m| m.key().is_none() || !bad.iter().any(|b| b.key() == m.key()))
                .collect();
            bad.extend(more);
            Err(bad)
        }
    }
}
