//! RFC 7240 `Prefer`, the two preferences `auto` acts on: `wait=N` (whole seconds the client
//! would wait for an answer) and `respond-async` (answer 202 unless the work starts at once).
//! Other preferences are ignored, as the RFC says; a malformed `wait` is the client's mistake,
//! answered 400 before any work is done.

use std::time::Duration;

/// The largest `wait` accepted: a longer wish is more likely a unit mistake (milliseconds for
/// seconds) than a real one. `GET /jobs/{id}` holds a long-poll for less
/// ([`MAX_LONG_POLL`](crate::MAX_LONG_POLL)).
pub const MAX_WAIT_SECS: u64 = 600;

/// The preferences `auto` acts on, read from every `Prefer` header of a request.
///
/// ```
/// use std::time::Duration;
/// use offload_axum::Prefer;
///
/// let p = Prefer::parse(["respond-async, wait=5".as_bytes()])?;
/// assert_eq!(p.wait, Some(Duration::from_secs(5)));
/// assert!(p.respond_async);
/// assert!(Prefer::parse(["wait=1.5".as_bytes()]).is_err());
/// # Ok::<(), offload_axum::Error>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Prefer {
    /// `wait=N`: the client would wait this long for an answer.
    pub wait: Option<Duration>,
    /// `respond-async`: the client would rather have 202 than wait for work that cannot start
    /// at once.
    pub respond_async: bool,
}

impl Prefer {
    /// Parses the values of a request's `Prefer` headers, in order. A preference given more
    /// than once counts at its first occurrence (RFC 7240, section 2); parameters after `;`
    /// are ignored (neither preference takes any).
    ///
    /// # Errors
    /// [`Error::BadPrefer`](crate::Error::BadPrefer) for a `wait` that is not a whole number of
    /// seconds from 0 to [`MAX_WAIT_SECS`], a `respond-async` with a value, or a header that is
    /// not text.
    pub fn parse<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Result<Prefer, crate::Error> {
        let bad = |m: String| crate::Error::BadPrefer(m);
        let mut out = Prefer::default();
        let (mut seen_wait, mut seen_async) = (false, false);
        for raw in values {
            let text =
                std::str::from_utf8(raw).map_err(|_| bad("the header is not text".into()))?;
            for pref in split_unquoted(text, ',') {
                let head = split_unquoted(pref, ';').next().unwrap_or_default().trim();
                let (name, value) = match head.split_once('=') {
                    Some((n, v)) => (n.trim(), Some(unquote(v.trim()))),
                    None => (head, None),
                };
                if name.eq_ignore_ascii_case("wait") && !seen_wait {
                    seen_wait = true;
                    out.wait = Some(parse_wait(value.unwrap_or_default()).ok_or_else(|| {
                        let shown: String = value.unwrap_or_default().chars().take(32).collect();
                        bad(format!(
                            "wait must be whole seconds from 0 to {MAX_WAIT_SECS}: got {shown:?}"
                        ))
                    })?);
                } else if name.eq_ignore_ascii_case("respond-async") && !seen_async {
                    seen_async = true;
                    if value.is_some_and(|v| !v.is_empty()) {
                        return Err(bad("respond-async takes no value".into()));
                    }
                    out.respond_async = true;
                }
            }
        }
        Ok(out)
    }

    /// The `Preference-Applied` value naming what was honoured, if anything was.
    pub fn applied(wait: Option<Duration>, respond_async: bool) -> Option<String> {
        let parts: Vec<String> = [
            respond_async.then(|| "respond-async".to_owned()),
            wait.map(|w| format!("wait={}", w.as_secs())),
        ]
        .into_iter()
        .flatten()
        .collect();
        (!parts.is_empty()).then(|| parts.join(", "))
    }
}

/// RFC 7240's delta-seconds: digits only (no sign, fraction or unit), at most [`MAX_WAIT_SECS`].
fn parse_wait(v: &str) -> Option<Duration> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = v.parse().ok()?;
    (n <= MAX_WAIT_SECS).then(|| Duration::from_secs(n))
}

fn unquote(v: &str) -> &str {
    v.strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(v)
}

/// Splits `s` at `sep` outside double quotes (a quoted value may hold commas).
fn split_unquoted(s: &str, sep: char) -> impl Iterator<Item = &str> {
    let (mut parts, mut start, mut quoted, mut escaped) = (Vec::new(), 0, false, false);
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == sep && !quoted => {
                parts.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts.into_iter()
}

/// Names what was honoured in a `Preference-Applied` header (RFC 7240), as
/// [`Prefer::applied`] gives it; nothing for `None`.
pub fn set_preference_applied(resp: &mut axum::response::Response, applied: Option<String>) {
    if let Some(v) = applied.and_then(|v| axum::http::HeaderValue::from_str(&v).ok()) {
        resp.headers_mut().insert("preference-applied", v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(values: &[&str]) -> Result<Prefer, crate::Error> {
        Prefer::parse(values.iter().map(|v| v.as_bytes()))
    }

    #[test]
    fn both_preferences_are_read_in_the_forms_the_rfc_allows() {
        assert_eq!(p(&[]).unwrap(), Prefer::default());
        let spread = p(&["Respond-Async; x=y", "WAIT = \"7\""]).unwrap();
        assert_eq!(
            spread,
            Prefer {
                wait: Some(Duration::from_secs(7)),
                respond_async: true
            }
        );
        let first = p(&["wait=2, return=minimal, wait=9", "handling=lenient"]).unwrap();
        assert_eq!(first.wait, Some(Duration::from_secs(2)));
        assert!(!first.respond_async);
        assert_eq!(p(&["wait=0"]).unwrap().wait, Some(Duration::ZERO));
        let quoted = p(&["foo=\"a,b\", wait=3"]).unwrap();
        assert_eq!(quoted.wait, Some(Duration::from_secs(3)));
        assert!(p(&["wait=600"]).is_ok());
    }

    #[test]
    fn bad_values_are_refused_naming_the_preference() {
        for bad in [
            "wait=-1",
            "wait=abc",
            "wait=1.5",
            "wait=",
            "wait",
            "wait=601",
            "wait=99999999999999999999999",
            "respond-async=yes",
        ] {
            let e = p(&[bad]).unwrap_err().to_string();
            assert!(
                e.contains("wait") || e.contains("respond-async"),
                "{bad}: {e}"
            );
        }
        assert!(Prefer::parse([&b"wait=\xff"[..]]).is_err());
    }

    #[test]
    fn applied_names_only_what_was_honoured() {
        assert_eq!(Prefer::applied(None, false), None);
        assert_eq!(
            Prefer::applied(Some(Duration::from_secs(3)), true).as_deref(),
            Some("respond-async, wait=3")
        );
        assert_eq!(
            Prefer::applied(Some(Duration::ZERO), false).as_deref(),
            Some("wait=0")
        );
    }
}
