//! What the backend hooks decide for a connection (PROTOCOL.md section
//! 9): joins of `join = "hook"` rooms, publishes into `publish = "hook"`
//! rooms, and `rpc` frames. Each is awaited in the frame's turn, after the
//! replies before it have left, so replies keep the order of the frames.

use serde_json::value::RawValue;

use super::{Reject, Session};
use crate::hooks::{Caller, Hook, HookError, PublishBody, RpcBody, Verdict, bad_answer};
use crate::protocol::{self, ErrorCode, out};

/// A hook that could not be asked never allows: `unavailable`.
fn failed(hook: Hook, e: &HookError) -> Reject {
    Reject::new(ErrorCode::Unavailable, e.client_message(hook))
}

impl Session {
    /// This connection, as a hook body names it.
    fn caller(&self) -> Caller<'_> {
        Caller {
            conn: &self.conn.id,
            user: Some(&self.conn.user),
        }
    }

    /// The publish hook's word on a publish: `None` to publish the
    /// client's `data`, `Some` to publish the backend's instead.
    pub(super) async fn ask_publish(
        &mut self,
        room: &str,
        event: &str,
        data: &RawValue,
        msg_id: &str,
    ) -> Result<Option<Box<RawValue>>, Reject> {
        let Some(hooks) = self.app.hooks() else {
            return Err(Reject::new(
                ErrorCode::Forbidden,
                format!(
                    "cannot publish to {room}: the publish hook decides and no [hooks] url is set"
                ),
            ));
        };
        let body = PublishBody {
            room,
            event,
            data,
            msg_id,
        };
        let verdict: Verdict = hooks
            .call(Hook::Publish, self.caller(), &body, self.conn.trace_id)
            .await
            .map_err(|e| failed(Hook::Publish, &e))?;
        if !verdict.allow {
            return Err(Reject::new(ErrorCode::Rejected, verdict.refusal()));
        }
        match verdict.data {
            None => Ok(None),
            // The backend's data is relayed like a client's: only JSON
            // every client reads back, within the frame size limit.
            Some(data) => {
                let readable = protocol::check_value(data.get(), protocol::MAX_DATA_DEPTH);
                if readable.is_err() || data.get().len() > hooks.max_data {
                    let e = bad_answer(
                        Hook::Publish,
                        format!(
                            "publish `data`: over {} bytes or not readable JSON",
                            hooks.max_data
                        ),
                    );
                    return Err(failed(Hook::Publish, &e));
                }
                Ok(Some(data))
            }
        }
    }

    /// An `rpc` frame: the backend's `result` (its data or its own error),
    /// or a `result` with `unavailable` when it could not be asked. (Hook
    /// calls take `&mut self`: a `Session` is `Send` but not `Sync`.)
    pub(super) async fn rpc(
        &mut self,
        id: Option<&RawValue>,
        method: &str,
        data: &RawValue,
    ) -> Result<(), Reject> {
        let hooks = match self.app.hooks() {
            Some(h) if h.settings().rpc => h,
            _ => {
                return Err(Reject::new(
                    ErrorCode::Forbidden,
                    "rpc is off on this server (set rpc = true and a url in [hooks])",
                ));
            }
        };
        let body = RpcBody { method, data };
        let answer = hooks
            .call::<crate::hooks::RpcAnswer>(Hook::Rpc, self.caller(), &body, self.conn.trace_id)
            .await
            .and_then(|a| a.result().map_err(|why| bad_answer(Hook::Rpc, why)));
        let frame = match &answer {
            Ok(Ok(data)) => out::RpcResult {
                ty: "result",
                id,
                data: Some(data),
                error: None,
            },
            Ok(Err(e)) => out::RpcResult {
                ty: "result",
                id,
                data: None,
                error: Some(out::RpcError {
                    code: &e.code,
                    message: &e.message,
                }),
            },
            Err(e) => {
                let message = e.client_message(Hook::Rpc);
                self.push(protocol::encode(&out::RpcResult {
                    ty: "result",
                    id,
                    data: None,
                    error: Some(out::RpcError {
                        code: ErrorCode::Unavailable.as_str(),
                        message: &message,
                    }),
                }));
                return Ok(());
            }
        };
        self.push(protocol::encode(&frame));
        Ok(())
    }
}
