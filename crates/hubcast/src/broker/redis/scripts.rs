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

/// The scripts, loaded once.
pub(super) struct Scripts {
    pub(super) publish: Script,
    pub(super) recover: Script,
    pub(super) history: Script,
    pub(super) presence_join: Script,
    pub(super) presence_leave: Script,
    pub(super) connect: Script,
    pub(super) disconnect: Script,
}

impl Scripts {
    pub(super) fn load() -> Self {
        let with_prelude = |body: &str| Script::new(&format!("{META_EPOCH}{META_PRELUDE}{body}"));
        Self {
            publish: Script::new(&format!("{META_EPOCH}{}", include_str!("lua/publish.lua"))),
            recover: with_prelude(include_str!("lua/recover.lua")),
            history: with_prelude(include_str!("lua/history.lua")),
            presence_join: Script::new(include_str!("lua/presence_join.lua")),
            presence_leave: Script::new(include_str!("lua/presence_leave.lua")),
            connect: Script::new(include_str!("lua/connect.lua")),
            disconnect: Script::new(include_str!("lua/disconnect.lua")),
        }
    }
}
