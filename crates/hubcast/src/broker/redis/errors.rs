//! What a failed Redis command means for a client: unavailable (and why:
//! down, out of memory, read-only) when it certainly never ran, a
//! `timeout` with the msgId (retry safely) when a publish's outcome is
//! unknown.

use crate::broker::{BrokerError, Unavailability};

/// A failed Redis command: the engine cannot serve, and why, as far as a
/// client may be told (`why`); the raw error for the log.
pub(super) fn unavailable(e: redis::RedisError) -> BrokerError {
    unavailable_ref(&e)
}

pub(super) fn unavailable_ref(e: &redis::RedisError) -> BrokerError {
    BrokerError::Unavailable {
        why: why(e),
        detail: format!("redis: {e}"),
    }
}

/// The engine cannot serve for a reason of its own (no Redis error to
/// classify: a bad URL, the pub/sub connection down, a timeout of ours).
pub(super) fn down(what: impl std::fmt::Display) -> BrokerError {
    BrokerError::unavailable(format!("redis: {what}"))
}

/// Why Redis refused or failed a command. A store that refuses writes is
/// told apart from one that is down, so that clients and `/readyz` can
/// say which. Redis 7 passes a script's failed call on with the call's own
/// error code; older versions wrap it in an `ERR` whose text holds the
/// code after a dash, so that is looked for too.
pub(super) fn why(e: &redis::RedisError) -> Unavailability {
    let refusal = |code: &str| match code {
        "OOM" => Some(Unavailability::OutOfMemory),
        "READONLY" | "MISCONF" => Some(Unavailability::ReadOnly),
        _ => None,
    };
    if let Some(why) = e.code().and_then(refusal) {
        return why;
    }
    if e.code() == Some("ERR") {
        let text = e.detail().unwrap_or_default();
        for code in ["OOM", "READONLY", "MISCONF"] {
            if text.contains(&format!("-{code} "))
                && let Some(why) = refusal(code)
            {
                return why;
            }
        }
    }
    Unavailability::Down
}

/// Whether a failed command certainly never ran: no connection could be
/// opened, the client refused it before sending, or Redis answered with an
/// error (a script that fails aborts before its `PUBLISH`, its last call).
/// Anything else (a reply that did not come in time, a connection lost with
/// the command possibly written) leaves the outcome unknown. The redis
/// client reports a command written to a connection that then closed and
/// one refused by an already closed connection the same way (broken pipe),
/// so both count as unknown.
pub(super) fn never_ran(e: &redis::RedisError) -> bool {
    use redis::ErrorKind;
    e.is_connection_refusal()
        || matches!(
            e.kind(),
            ErrorKind::Server(_)
                | ErrorKind::Extension
                | ErrorKind::Client
                | ErrorKind::InvalidClientConfig
                | ErrorKind::AuthenticationFailed
                | ErrorKind::ClusterConnectionNotFound
                | ErrorKind::EmptySentinelList
                | ErrorKind::MasterNameNotFoundBySentinel
                | ErrorKind::NoValidReplicasFoundBySentinel
                | ErrorKind::RESP3NotSupported
        )
}

/// A failed publish of `msg_id`: `unavailable` only when it was certainly
/// not published, `timeout` (retry with the same msgId) when unknown.
/// The cluster client retries a command by itself after most errors
/// (`retried`), and reports only the last attempt's: that one never ran
/// says nothing of an earlier attempt that timed out, so there only an
/// error it does not retry (its first attempt's) can be trusted.
pub(super) fn publish_error(e: &redis::RedisError, msg_id: &str, retried: bool) -> BrokerError {
    let first_attempt = !retried || matches!(e.retry_method(), redis::RetryMethod::NoRetry);
    if first_attempt && never_ran(e) {
        unavailable_ref(e)
    } else {
        BrokerError::Timeout {
            msg_id: msg_id.to_owned(),
            detail: format!("redis: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    use redis::{ErrorKind, RedisError, ServerErrorKind};

    use super::*;

    #[test]
    fn only_a_publish_that_certainly_never_ran_is_unavailable() {
        let refused = RedisError::from(io::Error::from(io::ErrorKind::ConnectionRefused));
        let script_failed = RedisError::from((
            ErrorKind::Server(ServerErrorKind::ResponseError),
            "ERR user_script:1: oom",
        ));
        let client = RedisError::from((ErrorKind::Client, "bad command"));
        for e in [refused.clone(), script_failed.clone(), client] {
            assert!(
                matches!(
                    publish_error(&e, "m", false),
                    BrokerError::Unavailable { .. }
                ),
                "{e}"
            );
        }
        // The cluster client retried a refused connection: an earlier
        // attempt may have timed out after reaching Redis.
        assert!(matches!(
            publish_error(&refused, "m", true),
            BrokerError::Timeout { .. }
        ));
        // A script error is not retried: the only attempt failed.
        assert!(matches!(
            publish_error(&script_failed, "m", true),
            BrokerError::Unavailable { .. }
        ));
        let timed_out = RedisError::from(io::Error::from(io::ErrorKind::TimedOut));
        let dropped = RedisError::from(io::Error::from(io::ErrorKind::BrokenPipe));
        let reset = RedisError::from(io::Error::from(io::ErrorKind::ConnectionReset));
        let bad_reply = RedisError::from((ErrorKind::UnexpectedReturnType, "not an array"));
        for e in [timed_out, dropped, reset, bad_reply] {
            match publish_error(&e, "m-1", false) {
                BrokerError::Timeout { msg_id, .. } => assert_eq!(msg_id, "m-1"),
                other => panic!("{e}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_store_refusing_writes_is_told_apart_from_one_down() {
        let oom = redis::make_extension_error(
            "OOM".into(),
            Some("command not allowed when used memory > 'maxmemory'.".into()),
        );
        let readonly = RedisError::from((
            ErrorKind::Server(ServerErrorKind::ReadOnly),
            "You can't write against a read only replica.",
        ));
        let misconf = redis::make_extension_error(
            "MISCONF".into(),
            Some("Redis is configured to save RDB snapshots, but it's currently unable to persist to disk.".into()),
        );
        // Before Redis 7, a script's failed call came wrapped in an ERR.
        let wrapped = RedisError::from((
            ErrorKind::Server(ServerErrorKind::ResponseError),
            "Error running script",
            "@user_script:1: -OOM command not allowed when used memory > 'maxmemory'.".into(),
        ));
        let refused = RedisError::from(io::Error::from(io::ErrorKind::ConnectionRefused));
        let other = RedisError::from((
            ErrorKind::Server(ServerErrorKind::ResponseError),
            "ERR user_script:1: oom",
        ));
        assert_eq!(why(&oom), Unavailability::OutOfMemory);
        assert_eq!(why(&wrapped), Unavailability::OutOfMemory);
        assert_eq!(why(&readonly), Unavailability::ReadOnly);
        assert_eq!(why(&misconf), Unavailability::ReadOnly);
        assert_eq!(why(&refused), Unavailability::Down);
        assert_eq!(why(&other), Unavailability::Down);
        // The raw text stays for the log; the client's sentence is fixed.
        let e = publish_error(&oom, "m", false);
        assert!(e.to_string().contains("maxmemory"), "{e}");
        assert_eq!(e.client_message(), "the message store is out of memory");
        let e = publish_error(&refused, "m", true);
        assert!(!e.client_message().contains("redis"), "{e}");
    }
}
