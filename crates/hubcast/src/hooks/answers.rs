//! What each hook sends and what it reads back (PROTOCOL.md section 9).
//! Every body gets `hook` and a fresh `id` ([`Envelope`]); answers are read
//! strictly enough that a garbled one never passes for a yes.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

use super::Hook;

/// The connection a hook asks about: every body names it, and the user
/// once one is known (every hook but `connect`).
#[derive(Clone, Copy, Serialize)]
pub(crate) struct Caller<'a> {
    pub conn: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<&'a str>,
}

/// A body as sent: `hook`, a request `id` (UUIDv7, unique per request, for
/// the backend's logs and deduplication), the caller, then the hook's own
/// fields.
#[derive(Serialize)]
pub(super) struct Envelope<'a, B> {
    pub hook: &'static str,
    pub id: String,
    #[serde(flatten)]
    pub caller: Caller<'a>,
    #[serde(flatten)]
    pub body: &'a B,
}

impl<'a, B> Envelope<'a, B> {
    pub(super) fn new(hook: Hook, caller: Caller<'a>, body: &'a B) -> Self {
        Self {
            hook: hook.as_str(),
            id: uuid::Uuid::now_v7().to_string(),
            caller,
            body,
        }
    }
}

/// `connect`: who is knocking, as the handshake showed it.
#[derive(Serialize)]
pub(crate) struct ConnectBody<'a> {
    /// The client's IP address (the peer's, or the one a trusted proxy
    /// names: `crate::http::forwarded`).
    pub remote: String,
    /// `cookie`, `authorization`, `origin`, `user-agent`, those sent.
    pub headers: BTreeMap<&'static str, &'a str>,
    pub query: &'a HashMap<String, String>,
}

/// `join`.
#[derive(Serialize)]
pub(crate) struct JoinBody<'a> {
    pub room: &'a str,
}

/// `publish`.
#[derive(Serialize)]
pub(crate) struct PublishBody<'a> {
    pub room: &'a str,
    pub event: &'a str,
    pub data: &'a RawValue,
    #[serde(rename = "msgId")]
    pub msg_id: &'a str,
}

/// `rpc`.
#[derive(Serialize)]
pub(crate) struct RpcBody<'a> {
    pub method: &'a str,
    pub data: &'a RawValue,
}

/// A backend's `{"code","message"}`.
#[derive(Debug, Deserialize)]
pub(crate) struct BackendError {
    pub code: String,
    #[serde(default)]
    pub message: String,
}

/// The `connect` answer: a user and its claims, or an `error`.
#[derive(Debug, Deserialize)]
pub(crate) struct ConnectAnswer {
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub rooms: Option<Vec<String>>,
    #[serde(default)]
    pub subs: Vec<String>,
    #[serde(default)]
    pub admin: bool,
    /// Unix seconds, like a JWT's `exp`; none: no expiry.
    #[serde(default, rename = "expiresAt")]
    pub expires_at: Option<u64>,
    #[serde(default)]
    pub error: Option<BackendError>,
}

/// The `join` and `publish` answer.
#[derive(Debug, Deserialize)]
pub(crate) struct Verdict {
    /// Required: an answer without it is unreadable.
    pub allow: bool,
    #[serde(default)]
    pub message: Option<String>,
    /// `publish` only: what to publish instead of the client's `data`
    /// (`null` included, hence not an `Option` of a JSON value).
    #[serde(default, deserialize_with = "present")]
    pub data: Option<Box<RawValue>>,
}

impl Verdict {
    /// The message a refused client reads.
    pub(crate) fn refusal(&self) -> String {
        match self.message.as_deref() {
            Some(m) if !m.is_empty() => m.chars().take(1024).collect(),
            _ => "refused by the application".into(),
        }
    }
}

/// The `rpc` answer: `data`, or the backend's own `error`.
#[derive(Debug, Deserialize)]
pub(crate) struct RpcAnswer {
    #[serde(default, deserialize_with = "present")]
    data: Option<Box<RawValue>>,
    #[serde(default)]
    error: Option<BackendError>,
}

impl RpcAnswer {
    /// The result to pass on; neither field (or a bad error) is unreadable.
    pub(crate) fn result(self) -> Result<Result<Box<RawValue>, BackendError>, String> {
        match (self.error, self.data) {
            (Some(e), _) => {
                let bad = e.code.is_empty()
                    || e.code.len() > 64
                    || e.code.chars().any(char::is_control)
                    || e.message.len() > 4096;
                if bad {
                    return Err(
                        "rpc error: `code` must be 1 to 64 characters, `message` at most 4096"
                            .into(),
                    );
                }
                Ok(Err(e))
            }
            (None, Some(data)) => Ok(Ok(data)),
            (None, None) => Err("an rpc answer needs `data` or `error`".into()),
        }
    }
}

/// A field that is present, even as `null`, is `Some`.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(d).map(Some)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn verdicts_need_allow_and_keep_a_null_data() {
        assert!(serde_json::from_str::<Verdict>(r#"{"ok":true}"#).is_err());
        let v: Verdict = serde_json::from_str(r#"{"allow":true,"data":null}"#).unwrap();
        assert_eq!(v.data.unwrap().get(), "null");
        let v: Verdict = serde_json::from_str(r#"{"allow":false}"#).unwrap();
        assert_eq!(v.refusal(), "refused by the application");
    }

    #[test]
    fn rpc_answers_are_data_or_error() {
        let a: RpcAnswer = serde_json::from_str(r#"{"data":[1]}"#).unwrap();
        assert_eq!(a.result().unwrap().unwrap().get(), "[1]");
        let a: RpcAnswer =
            serde_json::from_str(r#"{"error":{"code":"nope","message":"no"}}"#).unwrap();
        assert_eq!(a.result().unwrap().unwrap_err().code, "nope");
        let a: RpcAnswer = serde_json::from_str("{}").unwrap();
        assert!(a.result().is_err());
    }

    #[test]
    fn bodies_carry_hook_and_id() {
        let caller = Caller {
            conn: "c-1",
            user: Some("u"),
        };
        let body = JoinBody { room: "r" };
        let text = serde_json::to_string(&Envelope::new(Hook::Join, caller, &body)).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let field = |k: &str| v[k].as_str().unwrap_or_default().to_string();
        assert_eq!(
            [field("hook"), field("conn"), field("user")],
            ["join", "c-1", "u"]
        );
        assert_eq!(v["room"], "r");
        assert!(v["id"].as_str().is_some_and(|id| id.len() == 36));
        // The fields in the order PROTOCOL.md lists them.
        assert!(text.starts_with(r#"{"hook":"join","id":"#), "{text}");
        assert!(
            text.ends_with(r#","conn":"c-1","user":"u","room":"r"}"#),
            "{text}"
        );
        // `connect` knows no user yet: the field is left out.
        let caller = Caller {
            conn: "c-1",
            user: None,
        };
        let v = serde_json::to_value(Envelope::new(Hook::Connect, caller, &body)).unwrap();
        assert!(v.get("user").is_none(), "{v}");
    }
}
