//! What a connection may do: the `rooms` claim's patterns and the grants
//! a token (or anonymity) gives, checked on every join, read and publish.

use std::sync::Arc;

use super::TokenId;

/// A `rooms` claim entry: dot-separated segments, `*` matching one segment
/// and a final `**` matching one or more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomPattern(Vec<String>);

impl RoomPattern {
    /// Parses a pattern.
    pub fn parse(p: &str) -> Result<RoomPattern, String> {
        if p.is_empty() || p.len() > 128 {
            return Err(format!("pattern {p:?} must be 1 to 128 characters"));
        }
        let segs: Vec<String> = p.split('.').map(str::to_string).collect();
        for (i, s) in segs.iter().enumerate() {
            let ok = s == "*"
                || (s == "**" && i == segs.len() - 1)
                || (!s.is_empty()
                    && s.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b':' | b'-')));
            if !ok {
                return Err(format!("pattern {p:?}: bad segment {s:?} (`**` only last)"));
            }
        }
        Ok(RoomPattern(segs))
    }

    /// Whether `room` matches. Walks the name's segments without
    /// allocating: it runs on every join and publish that a `[[rooms]]`
    /// rule or a `rooms` claim governs.
    pub fn matches(&self, room: &str) -> bool {
        let mut parts = room.split('.');
        for (k, seg) in self.0.iter().enumerate() {
            if seg == "**" {
                // One or more segments, none of them empty.
                let mut any = false;
                for part in parts.by_ref() {
                    if part.is_empty() {
                        return false;
                    }
                    any = true;
                }
                return any && k == self.0.len() - 1;
            }
            match parts.next() {
                Some(part) if !part.is_empty() && (seg == "*" || seg == part) => {}
                _ => return false,
            }
        }
        parts.next().is_none()
    }
}

/// What a connection may do, from its token (or anonymity).
#[derive(Debug, Clone, Default)]
pub struct Grants {
    /// May join, read and publish anywhere, personal rooms included.
    pub admin: bool,
    /// Allowed non-personal rooms; `None`: all.
    pub rooms: Option<Arc<[RoomPattern]>>,
    /// The token's `jti` and `iat`, matched by revocations (none for an
    /// anonymous connection).
    pub token: TokenId,
}

impl Grants {
    /// Whether `user` may join, read or publish to `room`.
    pub fn allows(&self, user: &str, room: &str) -> bool {
        if self.admin {
            return true;
        }
        if let Some(owner) = room.strip_prefix('@') {
            return owner == user;
        }
        match &self.rooms {
            None => true,
            Some(patterns) => patterns.iter().any(|p| p.matches(room)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        let p = |s: &str| RoomPattern::parse(s).unwrap();
        assert!(p("lobby").matches("lobby"));
        assert!(!p("lobby").matches("lobby.x"));
        assert!(p("chat.*").matches("chat.general"));
        assert!(!p("chat.*").matches("chat"));
        assert!(!p("chat.*").matches("chat.a.b"));
        assert!(p("team.**").matches("team.a"));
        assert!(p("team.**").matches("team.a.b.c"));
        assert!(!p("team.**").matches("team"));
        // A wildcard never matches an empty segment.
        assert!(!p("chat.*").matches("chat."));
        assert!(!p("team.**").matches("team."));
        assert!(!p("team.**").matches("team.a."));
        assert!(!p("team.**").matches("team..a"));
        assert!(!p("*.x").matches(".x"));
        assert!(p("*.news").matches("eu.news"));
        assert!(RoomPattern::parse("a.**.b").is_err());
        assert!(RoomPattern::parse("a..b").is_err());
    }

    #[test]
    fn grants() {
        let g = Grants {
            admin: false,
            rooms: Some(Arc::from(vec![RoomPattern::parse("chat.*").unwrap()])),
            token: TokenId::default(),
        };
        assert!(g.allows("alice", "chat.x"));
        assert!(!g.allows("alice", "other"));
        assert!(g.allows("alice", "@alice"));
        assert!(!g.allows("alice", "@bob"));
        let admin = Grants {
            admin: true,
            rooms: None,
            token: TokenId::default(),
        };
        assert!(admin.allows("root", "@bob"));
        assert!(Grants::default().allows("x", "anything"));
    }
}
