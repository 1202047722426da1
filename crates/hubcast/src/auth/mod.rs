//! Connection tokens (PROTOCOL.md section 1, "JWT claims") and what they
//! allow.
//!
//! A token is a JWT signed with HS256 (`jwt_secret`) or with RS256/ES256
//! (`jwt_public_key`, a PEM file; the key type picks the algorithm). Only
//! that one algorithm is accepted: `alg: none`, other algorithms and other
//! keys are refused. `sub` and `exp` are required. With `jwt_jwks_url`,
//! RS256/ES256 keys come from a JWKS endpoint instead, chosen by the
//! token's `kid` (`crate::jwks`).

use std::sync::Arc;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::config::{Config, ConfigError};
use crate::protocol;

mod grants;
pub use grants::{Grants, RoomPattern};

/// What a token signed with no key this server holds is told.
const BAD_SIGNATURE: &str = "bad signature";

/// How a handshake's credentials are checked.
pub struct Auth {
    /// The verification key and its one algorithm, when tokens are on.
    key: Option<(DecodingKey, Algorithm)>,
    /// `jwt_secret_previous`: a second HS256 key, tried when `key` finds
    /// a bad signature, so that a secret rotates without a restart.
    previous: Option<DecodingKey>,
    /// Keys from `jwt_jwks_url`, by `kid` (instead of `key`).
    pub jwks: Option<Arc<crate::jwks::Jwks>>,
    /// Whether connections without a token are let in.
    pub anonymous: bool,
    /// Anonymity was not chosen but granted because the server listens on
    /// loopback: it then holds only for requests that name a loopback host
    /// (a DNS-rebound name reaches 127.0.0.1 too).
    pub loopback_trust: bool,
}

/// Who a token says the client is.
#[derive(Debug, Clone)]
pub struct Identity {
    /// `sub`.
    pub user: String,
    /// `name`, if any.
    pub name: Option<String>,
    /// `rooms` patterns; `None`: every non-personal room.
    pub rooms: Option<Arc<[RoomPattern]>>,
    /// `admin`.
    pub admin: bool,
    /// `exp`, Unix seconds.
    pub exp: u64,
    /// `jti` and `iat`: what a revocation names.
    pub token: TokenId,
    /// `subs`: rooms the connection joins at connect, as the token lists
    /// them (each is checked like a `join` when the connection opens).
    pub subs: Vec<String>,
}

/// What names a token for revocation (PROTOCOL.md section 8): its `jti`,
/// and its `iat` (Unix seconds).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenId {
    /// `jti`, if any.
    pub jti: Option<Arc<str>>,
    /// `iat`, if any.
    pub iat: Option<u64>,
}

/// Why a handshake's token was refused (HTTP 401).
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No token where one is required.
    #[error("a token is required (Authorization: Bearer <JWT> or ?token=)")]
    Missing,
    /// A token was sent but tokens are not configured.
    #[error(
        "this server does not accept tokens (no jwt_secret, jwt_public_key or jwt_jwks_url configured)"
    )]
    NotConfigured,
    /// Expired.
    #[error("token expired")]
    Expired,
    /// `nbf` is still in the future (past the leeway).
    #[error("token not valid yet (nbf)")]
    NotYetValid,
    /// The token's `kid` is not among the JWKS keys held (the handshake
    /// asks for a fetch and tries once more before refusing).
    #[error("unknown key id (kid) {0:?}")]
    UnknownKey(String),
    /// Anything else: bad signature, algorithm, claims, format.
    #[error("invalid token: {0}")]
    Invalid(String),
}

/// How far in the future a token's `nbf` may be (clock skew between the
/// issuer and this node), as identity providers commonly allow.
const NBF_LEEWAY_SECS: u64 = 60;

/// A token's claims; the connect hook's answer is read into the same
/// claims (`crate::hooks`), so that both grant alike.
#[derive(Deserialize)]
pub(crate) struct Claims {
    pub(crate) sub: String,
    pub(crate) exp: u64,
    #[serde(default)]
    pub(crate) nbf: Option<u64>,
    #[serde(default)]
    pub(crate) name: Option<String>,
    #[serde(default)]
    pub(crate) rooms: Option<Vec<String>>,
    #[serde(default)]
    pub(crate) admin: bool,
    #[serde(default)]
    pub(crate) jti: Option<String>,
    #[serde(default)]
    pub(crate) iat: Option<u64>,
    #[serde(default)]
    pub(crate) subs: Vec<String>,
}

impl Auth {
    /// Reads the key settings; fails naming the key.
    pub fn from_config(cfg: &Config) -> Result<Auth, ConfigError> {
        let bad = |key: &str, message: String| ConfigError::Invalid {
            key: key.into(),
            message,
        };
        let secret = match (&cfg.jwt_secret, &cfg.jwt_secret_file) {
            (Some(_), Some(_)) => {
                return Err(bad(
                    "jwt_secret_file",
                    "set jwt_secret or jwt_secret_file, not both".into(),
                ));
            }
            (Some(s), None) => Some(s.clone()),
            (None, Some(path)) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| {
                        bad(
                            "jwt_secret_file",
                            format!("cannot read {}: {e}", path.display()),
                        )
                    })?
                    .trim_end_matches(['\n', '\r'])
                    .to_string(),
            ),
            (None, None) => None,
        };
        let key = match (secret, &cfg.jwt_public_key) {
            (Some(_), Some(_)) => {
                return Err(bad(
                    "jwt_public_key",
                    "set a JWT secret or a public key, not both".into(),
                ));
            }
            (Some(secret), None) => {
                if secret.len() < 16 {
                    return Err(bad("jwt_secret", "must be at least 16 bytes".into()));
                }
                Some((
                    DecodingKey::from_secret(secret.as_bytes()),
                    Algorithm::HS256,
                ))
            }
            (None, Some(path)) => {
                let pem = std::fs::read(path).map_err(|e| {
                    bad(
                        "jwt_public_key",
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                let key = if let Ok(k) = DecodingKey::from_rsa_pem(&pem) {
                    (k, Algorithm::RS256)
                } else if let Ok(k) = DecodingKey::from_ec_pem(&pem) {
                    (k, Algorithm::ES256)
                } else {
                    return Err(bad(
                        "jwt_public_key",
                        format!(
                            "{} is not an RSA or EC (P-256) public key in PEM",
                            path.display()
                        ),
                    ));
                };
                Some(key)
            }
            (None, None) => None,
        };
        let previous = match (&cfg.jwt_secret_previous, &key) {
            (None, _) => None,
            (Some(old), Some((_, Algorithm::HS256))) => {
                if old.len() < 16 {
                    return Err(bad(
                        "jwt_secret_previous",
                        "must be at least 16 bytes".into(),
                    ));
                }
                Some(DecodingKey::from_secret(old.as_bytes()))
            }
            (Some(_), _) => {
                return Err(bad(
                    "jwt_secret_previous",
                    "is for rotating an HS256 secret: set jwt_secret (or jwt_secret_file) too"
                        .into(),
                ));
            }
        };
        let jwks = match &cfg.jwt_jwks_url {
            None => None,
            Some(_) if key.is_some() => {
                return Err(bad(
                    "jwt_jwks_url",
                    "set a JWT secret, a public key or a JWKS URL, only one".into(),
                ));
            }
            Some(url) => Some(Arc::new(
                crate::jwks::Jwks::new(url, cfg.jwt_jwks_ca_file.as_deref())
                    .map_err(|(field, m)| bad(field, m))?,
            )),
        };
        let loopback_trust = cfg.anonymous.is_none() && cfg.listen.ip().is_loopback();
        let anonymous = cfg.anonymous.unwrap_or(loopback_trust);
        Ok(Auth {
            key,
            previous,
            jwks,
            anonymous,
            loopback_trust,
        })
    }

    /// Whether tokens can be verified (a key or a JWKS is configured).
    pub fn takes_tokens(&self) -> bool {
        self.key.is_some() || self.jwks.is_some()
    }

    /// Checks a handshake's token (if any). `Ok(None)`: anonymous.
    pub fn authenticate(&self, token: Option<&str>) -> Result<Option<Identity>, AuthError> {
        let Some(token) = token else {
            return if self.anonymous {
                Ok(None)
            } else {
                Err(AuthError::Missing)
            };
        };
        if let Some(jwks) = &self.jwks {
            let key = jwks.key_for(token)?;
            return self.verify(token, &key.0, key.1).map(Some);
        }
        let Some((key, alg)) = &self.key else {
            return Err(AuthError::NotConfigured);
        };
        match (self.verify(token, key, *alg), &self.previous) {
            (Err(AuthError::Invalid(m)), Some(old)) if m == BAD_SIGNATURE => {
                self.verify(token, old, *alg).map(Some)
            }
            (r, _) => r.map(Some),
        }
    }

    /// Checks `token`'s signature with `key` (its one algorithm `alg`) and
    /// its claims.
    fn verify(
        &self,
        token: &str,
        key: &DecodingKey,
        alg: Algorithm,
    ) -> Result<Identity, AuthError> {
        let mut validation = Validation::new(alg);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.leeway = 0;
        // Checked below with its own leeway: `exp` has none (a token is
        // refused from the second it expires), `nbf` tolerates clock skew.
        validation.validate_nbf = false;
        let data = jsonwebtoken::decode::<Claims>(token, key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::InvalidSignature => AuthError::Invalid(BAD_SIGNATURE.into()),
                ErrorKind::InvalidAlgorithm => {
                    AuthError::Invalid(format!("only {alg:?} tokens are accepted"))
                }
                ErrorKind::MissingRequiredClaim(c) => {
                    AuthError::Invalid(format!("missing claim `{c}`"))
                }
                _ => AuthError::Invalid(e.to_string()),
            }
        })?;
        identity(data.claims)
    }
}

/// What verified claims grant: their checks (`sub`, `name`, `rooms`,
/// `nbf`) and the [`Identity`] they make.
pub(crate) fn identity(c: Claims) -> Result<Identity, AuthError> {
    if let Some(nbf) = c.nbf
        && nbf > (crate::unix_ms() / 1000).max(0) as u64 + NBF_LEEWAY_SECS
    {
        return Err(AuthError::NotYetValid);
    }
    protocol::check_user(&c.sub).map_err(|m| AuthError::Invalid(format!("claim `sub`: {m}")))?;
    // An id is shown as it is (and is the display name when the token
    // has none), so one with direction controls is refused, not changed.
    if c.sub.chars().any(protocol::is_bidi_control) {
        return Err(AuthError::Invalid(
            "claim `sub`: no bidirectional controls (U+061C, U+200E, U+200F, U+202A-U+202E, U+2066-U+2069)".into(),
        ));
    }
    // A name is the user's choice, vouched for by the issuer: its
    // direction controls are dropped rather than locking the user out.
    let name = c.name.map(strip_bidi).filter(|n| !n.is_empty());
    if let Some(name) = &name
        && (name.chars().count() > 64 || name.chars().any(char::is_control))
    {
        return Err(AuthError::Invalid(
            "claim `name`: at most 64 characters, no control characters".into(),
        ));
    }
    let rooms = match c.rooms {
        None => None,
        Some(list) => Some(
            list.iter()
                .map(|p| RoomPattern::parse(p))
                .collect::<Result<Arc<[RoomPattern]>, _>>()
                .map_err(|m| AuthError::Invalid(format!("claim `rooms`: {m}")))?,
        ),
    };
    Ok(Identity {
        user: c.sub,
        name,
        rooms,
        admin: c.admin,
        exp: c.exp,
        token: TokenId {
            jti: c.jti.map(Arc::from),
            iat: c.iat,
        },
        subs: c.subs,
    })
}

/// `name` without its bidirectional controls (allocating only when it has
/// some).
fn strip_bidi(name: String) -> String {
    if name.chars().any(protocol::is_bidi_control) {
        name.chars()
            .filter(|c| !protocol::is_bidi_control(*c))
            .collect()
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed(secret: &str, sub: &str) -> String {
        let claims = serde_json::json!({"sub": sub, "exp": crate::unix_ms() / 1000 + 60});
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap_or_default()
    }

    #[test]
    fn a_rotated_secret_accepts_the_new_and_the_previous_one_only() {
        let (new, old, other) = (
            "new-secret-0123456789",
            "old-secret-0123456789",
            "else-secret-0123456789",
        );
        let cfg = Config {
            jwt_secret: Some(new.into()),
            jwt_secret_previous: Some(old.into()),
            ..Config::default()
        };
        let auth = Auth::from_config(&cfg).unwrap();
        let user = |t: &str| auth.authenticate(Some(t)).map(|id| id.map(|i| i.user));
        assert_eq!(user(&signed(new, "a")).unwrap(), Some("a".into()));
        assert_eq!(user(&signed(old, "b")).unwrap(), Some("b".into()));
        assert!(matches!(
            user(&signed(other, "c")),
            Err(AuthError::Invalid(_))
        ));
        // Without the previous secret, its tokens are refused.
        let auth = Auth::from_config(&Config {
            jwt_secret_previous: None,
            ..cfg.clone()
        })
        .unwrap();
        assert!(auth.authenticate(Some(&signed(old, "b"))).is_err());
        // A previous secret alone rotates nothing: refused, named.
        let e = Auth::from_config(&Config {
            jwt_secret: None,
            ..cfg
        })
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("jwt_secret_previous"), "{e}");
    }

    fn hs256(claims: serde_json::Value) -> (Auth, String) {
        let secret = b"unit-test-secret-0123456789";
        let auth = Auth {
            key: Some((DecodingKey::from_secret(secret), Algorithm::HS256)),
            previous: None,
            jwks: None,
            anonymous: false,
            loopback_trust: false,
        };
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(secret),
        )
        .unwrap_or_default();
        (auth, token)
    }

    #[test]
    fn bidi_controls_are_dropped_from_names_and_refused_in_ids() {
        let exp = crate::unix_ms() as u64 / 1000 + 600;
        let (auth, t) = hs256(serde_json::json!({
            "sub": "alice", "exp": exp, "name": "Al\u{202E}ice\u{2066}\u{200F}"
        }));
        let id = auth.authenticate(Some(&t)).ok().flatten().map(|i| i.name);
        assert_eq!(id, Some(Some("Alice".to_string())));
        // A name of controls only is no name: the user id is shown.
        let (auth, t) = hs256(serde_json::json!({"sub": "bob", "exp": exp, "name": "\u{202E}"}));
        let id = auth.authenticate(Some(&t)).ok().flatten().map(|i| i.name);
        assert_eq!(id, Some(None));
        let (auth, t) = hs256(serde_json::json!({"sub": "eve\u{202E}", "exp": exp}));
        assert!(
            matches!(auth.authenticate(Some(&t)), Err(AuthError::Invalid(m)) if m.contains("bidirectional"))
        );
    }
}
