//! Who may change jobs through the `/jobs` routes (cancel, retry): [`Changes`], and the
//! [`AdminToken`] they may need, sent as `Authorization: Bearer TOKEN` and compared in constant
//! time. Reading is never guarded here: a status page and Prometheus read without a token.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::http::{HeaderMap, header};
use offload_queue::log::Site;

use crate::Error;

/// The shortest token accepted: 16 characters, such as `openssl rand -hex 16` gives twice
/// over. A shorter secret could be guessed by a client that keeps trying.
pub const MIN_TOKEN_LEN: usize = 16;

/// The longest token accepted: longer would only make every header larger.
pub const MAX_TOKEN_LEN: usize = 1_024;

/// The secret that changes need (see [`Changes::Token`]): 16 to 1,024 visible ASCII characters
/// without spaces, so that it fits an `Authorization` header as it is. Its `Debug` form hides
/// it.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(Arc<str>);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(..)")
    }
}

/// Why a string cannot be an [`AdminToken`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BadToken {
    /// Fewer than [`MIN_TOKEN_LEN`] or more than [`MAX_TOKEN_LEN`] characters.
    #[error(
        "the admin token must have {MIN_TOKEN_LEN} to {MAX_TOKEN_LEN} characters (it has {0}); \
         `openssl rand -hex 16` makes one"
    )]
    Length(usize),
    /// A space, a control character or a character beyond ASCII.
    #[error("the admin token must be visible ASCII characters without spaces")]
    Characters,
}

impl AdminToken {
    /// The token `secret`.
    ///
    /// # Errors
    /// [`BadToken`] when it is too short, too long, or holds characters a header cannot carry
    /// as they are.
    pub fn new(secret: &str) -> Result<AdminToken, BadToken> {
        if !(MIN_TOKEN_LEN..=MAX_TOKEN_LEN).contains(&secret.len()) {
            return Err(BadToken::Length(secret.chars().count()));
        }
        if !secret.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(BadToken::Characters);
        }
        Ok(AdminToken(secret.into()))
    }

    /// Whether `presented` is this token, in a time that depends on the lengths only, not on
    /// where the first difference is.
    pub fn matches(&self, presented: &[u8]) -> bool {
        same(self.0.as_bytes(), presented)
    }
}

impl std::str::FromStr for AdminToken {
    type Err = BadToken;
    fn from_str(s: &str) -> Result<AdminToken, BadToken> {
        AdminToken::new(s)
    }
}

/// `a == b`, reading every byte of the longer whatever they hold: an early return at the first
/// difference would tell a client, by the answer's time, how much of its guess was right.
fn same(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u64::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        let (x, y) = (a.get(i).copied(), b.get(i).copied());
        diff |= u64::from(x.unwrap_or(0) ^ y.unwrap_or(0));
    }
    // The compiler must not see that the loop could stop once `diff` is set.
    std::hint::black_box(diff) == 0
}

/// Who may cancel and retry jobs through [`JobRoutes`](crate::JobRoutes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Changes {
    /// Anyone who can reach the routes (the default): for a service bound to loopback, or
    /// behind an authentication of its own.
    #[default]
    Open,
    /// Requests with `Authorization: Bearer TOKEN`; any other gets 401 and changes nothing.
    Token(AdminToken),
    /// Nobody: every change gets 401 (a service reachable from elsewhere, with no token set).
    Closed,
}

/// Why a change was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Denied {
    /// No `Authorization: Bearer` header.
    Missing,
    /// A bearer token that is not the admin token.
    Wrong,
    /// Changes are closed: the service has no admin token.
    Closed,
}

impl Denied {
    /// What the 401's message says.
    pub(crate) fn message(self) -> &'static str {
        match self {
            Denied::Missing => {
                "cancel and retry need the admin token: send `Authorization: Bearer TOKEN`"
            }
            Denied::Wrong => "the admin token is wrong: nothing was changed",
            Denied::Closed => {
                "cancel and retry are turned off: this server is reachable from other hosts and \
                 has no admin token; give it one to allow them"
            }
        }
    }
}

/// The check [`JobRoutes`](crate::JobRoutes) makes before any change, and its count of wrong
/// tokens. Clones share the count.
#[derive(Debug, Clone, Default)]
pub(crate) struct Guard {
    pub changes: Changes,
    pub wrong: Arc<AtomicU64>,
}

impl Guard {
    /// `Ok` when the request may change jobs; else the 401 to answer. A wrong token is counted
    /// and logged, at most a line a second.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), Error> {
        let presented = bearer(headers);
        let denied = match (&self.changes, presented) {
            (Changes::Open, _) => return Ok(()),
            (Changes::Token(t), Some(p)) if t.matches(p) => return Ok(()),
            (Changes::Token(_), None) => Denied::Missing,
            (Changes::Token(_), Some(_)) => Denied::Wrong,
            (Changes::Closed, _) => Denied::Closed,
        };
        if presented.is_some() {
            let total = self.wrong.fetch_add(1, Ordering::Relaxed) + 1;
            static SITE: Site = Site::new("admin_token_wrong");
            if let Some(held_back) = SITE.admit() {
                tracing::warn!(
                    total,
                    held_back,
                    closed = matches!(denied, Denied::Closed),
                    "offload-axum: a change to a job was refused: wrong admin token"
                );
            }
        }
        Err(Error::Unauthorized(denied))
    }
}

/// The token of an `Authorization: Bearer TOKEN` header (the scheme in any case, RFC 7235),
/// if the request has one.
fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let v = headers.get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, rest) = v.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") || !rest.starts_with(b" ") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_is_equality() {
        assert!(same(b"", b""));
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"ab"));
        assert!(!same(b"ab", b"abc"));
        assert!(
            !same(b"abc\0", b"abc"),
            "a trailing zero is still a difference"
        );
    }

    #[test]
    fn a_token_is_long_enough_and_fits_a_header() {
        assert_eq!(AdminToken::new("short"), Err(BadToken::Length(5)));
        assert_eq!(
            AdminToken::new("sixteen chars ok"),
            Err(BadToken::Characters)
        );
        assert_eq!(
            AdminToken::new("sixteen-chärs-ok"),
            Err(BadToken::Characters)
        );
        let t = AdminToken::new("0123456789abcdef").unwrap();
        assert!(t.matches(b"0123456789abcdef"));
        assert!(!t.matches(b"0123456789abcdeF"));
        assert_eq!(format!("{t:?}"), "AdminToken(..)", "Debug hides the secret");
    }

    #[test]
    fn the_bearer_is_read_in_any_case_of_the_scheme() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        for (value, token) in [
            ("Bearer abc", Some(&b"abc"[..])),
            ("bearer  abc ", Some(b"abc")),
            ("BEARER abc", Some(b"abc")),
            ("Bearer ", None),
            ("Bearerabc", None),
            ("Basic YWxhZGRpbjpvcGVuc2VzYW1l", None),
        ] {
            h.insert(header::AUTHORIZATION, value.parse().unwrap());
            assert_eq!(bearer(&h), token, "{value:?}");
        }
    }
}
