//! The engine's Lua scripts, one file each under `lua/`. Each touches one
//! room's keys (or one user's), so it runs on the cluster master holding
//! them.

use redis::Script;

/// The start of PUBLISH, RECOVER and HISTORY: `meta_epoch`, the room's
/// epoch, a new one when Redis lost it.
const META_EPOCH: &str = include_str!("lua/meta_epoch.lua");

/// The start of RECOVER and HISTORY after [`META_EPOCH`] (meta hash TTL,
/// top, `since`).
const META_PRELUDE: &str = include_str!("lua/meta_prelude.lua");

/// The webhook helpers the presence scripts start with
/// (`lua/webhooks.lua`); they act only when the caller passes the webhook
/// keys.
const WEBHOOKS: &str = include_str!("lua/webhooks.lua");

/// The scripts, loaded once.
pub(super) struct Scripts {
    pub(super) publish: Script,
    pub(super) recover: Script,
    pub(super) history: Script,
    pub(super) presence_join: Script,
    pub(super) presence_leave: Script,
    pub(super) connect: Script,
    pub(super) disconnect: Script,
    pub(super) webhook_promote: Script,
    pub(super) webhook_lease: Script,
}

impl Scripts {
    pub(super) fn load() -> Self {
        let with_webhooks = |body: &str| Script::new(&format!("{WEBHOOKS}{body}"));
        let with_prelude = |body: &str| Script::new(&format!("{META_EPOCH}{META_PRELUDE}{body}"));
        Self {
            publish: Script::new(&format!("{META_EPOCH}{}", include_str!("lua/publish.lua"))),
            recover: with_prelude(include_str!("lua/recover.lua")),
            history: with_prelude(include_str!("lua/history.lua")),
            presence_join: with_webhooks(include_str!("lua/presence_join.lua")),
            presence_leave: with_webhooks(include_str!("lua/presence_leave.lua")),
            connect: with_webhooks(include_str!("lua/connect.lua")),
            disconnect: with_webhooks(include_str!("lua/disconnect.lua")),
            webhook_promote: with_webhooks(include_str!("lua/webhook_promote.lua")),
            webhook_lease: Script::new(include_str!("lua/webhook_lease.lua")),
        }
    }
}
