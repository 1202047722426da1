//! What a SIGHUP changes (PROTOCOL.md section 11): [`Live`], the settings
//! a running server takes again without a restart, swapped whole so that
//! a handshake, join or publish reads them with one atomic load and no
//! lock; and [`apply`], which makes the next `Live` from a reloaded,
//! already checked [`Config`]. Keys outside [`RELOADED`] keep the value
//! the server started with, and a warning names them.
//!
//! A reloadable setting that is read where it is used (`app.live()`) is
//! one entry in [`RELOADED`]; one that needs state built from it (the
//! token keys, the room rules, the trusted proxies, the connection caps)
//! is built here too.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::App;
use crate::auth::Auth;
use crate::config::{Config, ConfigError};
use crate::hooks::Hooks;
use crate::http::forwarded::TrustedProxies;
use crate::rules::Rules;

/// The keys a reload applies. The per-connection ones (`rate_limit_*`,
/// `join_rate_per_conn`, `max_rooms_per_conn`, `max_message_bytes`) hold
/// for connections opened after the reload; `log_level` is applied by the
/// `hubcast` command, which owns the log subscriber; the webhooks by
/// `crate::webhooks::Webhooks::apply` once the rest is in force.
pub(crate) const RELOADED: &[&str] = &[
    "api_keys",
    "jwt_secret",
    "jwt_secret_file",
    "jwt_secret_previous",
    "jwt_public_key",
    "jwt_jwks_url",
    "anonymous",
    "allowed_origins",
    "trusted_proxies",
    "rooms",
    "log_level",
    "max_connections",
    "max_connections_per_ip",
    "max_connections_per_user",
    "handshakes_per_ip_per_sec",
    "max_rooms_per_conn",
    "max_presence_members",
    "max_message_bytes",
    "rate_limit_per_conn",
    "rate_limit_burst",
    "join_rate_per_conn",
    "hooks",
    "webhooks",
    "webhook_offline_delay",
    "webhook_retry_for",
];

/// The settings in force now.
pub(crate) struct Live {
    /// The settings: reloaded keys as last loaded, the others as at start.
    pub config: Config,
    /// Token verification from `config`.
    pub auth: Arc<Auth>,
    /// Room rules from `config`. The engine keeps the rules it started
    /// with for history (`history_size`, `history_ttl` of a `[[rooms]]`
    /// table), which a reload does not change.
    pub rules: Arc<Rules>,
    /// `trusted_proxies` from `config`.
    pub proxies: TrustedProxies,
    /// The backend hooks' client from `config.hooks`; none without a
    /// `url`. A reload that leaves `[hooks]` (and `max_message_bytes`) as
    /// they were keeps this one, its connection pool and its in-flight
    /// cap.
    pub hooks: Option<Arc<Hooks>>,
    /// Stops the JWKS fetch task of `auth`, when it has one.
    jwks_stop: CancellationToken,
}

impl Live {
    /// The settings a server starts with; spawns the JWKS fetch task, if
    /// any, on the app's tracker once the app exists ([`Live::start`]).
    pub(crate) fn new(config: Config) -> Result<Live, ConfigError> {
        Ok(Live {
            auth: Arc::new(Auth::from_config(&config)?),
            rules: Arc::new(Rules::from_config(&config)?),
            proxies: proxies(&config)?,
            hooks: Hooks::new(&config.hooks, config.max_message_bytes).map(Arc::new),
            config,
            jwks_stop: CancellationToken::new(),
        })
    }

    /// Starts what `auth` needs running (the JWKS fetches), until `stop`
    /// or until a reload replaces it.
    pub(crate) fn start(&self, app: &App) {
        if let Some(jwks) = &self.auth.jwks {
            let stop = self.jwks_stop.clone();
            let ends = app.stop.clone();
            let jwks = jwks.clone();
            app.tasks.spawn(async move {
                tokio::select! {
                    _ = jwks.run(stop) => {}
                    _ = ends.cancelled() => {}
                }
            });
        }
    }
}

/// Applies a reloaded, checked config: the keys of [`RELOADED`] change,
/// the others keep their running value and are named in a warning. A
/// config whose token keys or rules cannot be built now (a key file gone
/// since the check) changes nothing; the error is logged. Returns the keys
/// that changed.
pub(crate) fn apply(app: &App, new: Config) -> Vec<String> {
    let running = app.live();
    let (next, changed, restart) = merge(&running.config, &new);
    if !restart.is_empty() {
        tracing::warn!(
            keys = ?restart,
            "reload: these settings need a restart and keep their running value"
        );
    }
    let built = Auth::from_config(&next)
        .and_then(|auth| Ok((auth, Rules::from_config(&next)?, proxies(&next)?)));
    let (mut auth, rules, proxies) = match built {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "reload refused, nothing changed");
            return Vec::new();
        }
    };
    // The same JWKS URL keeps its cache and fetch task.
    let same_jwks = next.jwt_jwks_url == running.config.jwt_jwks_url;
    if same_jwks {
        auth.jwks = running.auth.jwks.clone();
    }
    let same_hooks = next.hooks == running.config.hooks
        && next.max_message_bytes == running.config.max_message_bytes;
    let hooks = if same_hooks {
        running.hooks.clone()
    } else {
        Hooks::new(&next.hooks, next.max_message_bytes).map(Arc::new)
    };
    let live = Live {
        hooks,
        config: next,
        auth: Arc::new(auth),
        rules: Arc::new(rules),
        proxies,
        jwks_stop: if same_jwks {
            running.jwks_stop.clone()
        } else {
            CancellationToken::new()
        },
    };
    if !same_jwks {
        running.jwks_stop.cancel();
        live.start(app);
    }
    app.limits.set(&live.config);
    app.live.store(Arc::new(live));
    tracing::info!(changed = ?changed, "settings reloaded");
    changed
}

/// `trusted_proxies`, checked with the config already.
fn proxies(config: &Config) -> Result<TrustedProxies, ConfigError> {
    TrustedProxies::parse(&config.trusted_proxies).map_err(|message| ConfigError::Invalid {
        key: "trusted_proxies".into(),
        message,
    })
}

/// The running config with `new`'s reloadable keys; the reloadable keys
/// that changed; the others that differ (kept).
fn merge(running: &Config, new: &Config) -> (Config, Vec<String>, Vec<String>) {
    let (mut merged, new_v) = match (serde_json::to_value(running), serde_json::to_value(new)) {
        (Ok(serde_json::Value::Object(r)), Ok(serde_json::Value::Object(n))) => (r, n),
        _ => return (running.clone(), Vec::new(), Vec::new()),
    };
    let (mut changed, mut restart) = (Vec::new(), Vec::new());
    for (key, value) in new_v {
        if merged.get(&key) == Some(&value) {
            continue;
        }
        // An unset node_id is a random one: the running one stays.
        if key == "node_id" && value == "" {
            continue;
        }
        if RELOADED.contains(&key.as_str()) {
            merged.insert(key.clone(), value);
            changed.push(key);
        } else {
            restart.push(key);
        }
    }
    let merged = serde_json::from_value(serde_json::Value::Object(merged))
        .unwrap_or_else(|_| running.clone());
    changed.sort();
    restart.sort();
    (merged, changed, restart)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::settings;

    #[test]
    fn every_reloaded_key_is_a_setting() {
        let keys: Vec<&str> = settings().iter().map(|s| s.key).collect();
        for key in RELOADED {
            // The two file-only tables are settings of their own kind.
            assert!(
                keys.contains(key) || ["rooms", "hooks", "webhooks"].contains(key),
                "{key}"
            );
        }
    }

    #[test]
    fn reloadable_keys_change_and_the_others_keep_their_value() {
        let running = Config {
            node_id: "n-1".into(),
            ..Config::default()
        };
        let new = Config {
            api_keys: vec!["k-0123456789abcdef".into()],
            heartbeat: 9,
            listen: "127.0.0.1:9".parse().unwrap(),
            ..Config::default()
        };
        let (next, changed, restart) = merge(&running, &new);
        assert_eq!(next.api_keys, new.api_keys);
        assert_eq!(
            (next.heartbeat, next.listen),
            (running.heartbeat, running.listen)
        );
        assert_eq!(next.node_id, "n-1");
        assert_eq!(changed, ["api_keys"]);
        assert_eq!(restart, ["heartbeat", "listen"]);
    }
}
