//! RFC 7240 `Prefer`: what a client would like, parsed once per request. offload honours two
//! preferences. `wait=N` is how long the client would wait for an answer, in whole seconds:
//! `auto` keeps in the pool only work predicted to finish within it, a synchronous strategy
//! gives up by then, and `GET /jobs/{id}` long-polls for that long. `respond-async` asks for
//! `202 Accepted` unless the work can start at once. Other preferences are ignored, as the RFC
//! says; a bad `wait` value is a client error, answered 400 before any work is done.

use std::time::Duration;

/// The largest `wait` accepted: a long-poll holds a connection for that long, and a longer
/// wish is more likely a unit mistake (milliseconds for seconds) than a real one.
pub const MAX_WAIT_SECS: u64 = 600;

/// The preferences offload acts on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Prefer {
    /// `wait=N`: the client would wait this long for an answer.
    pub wait: Option<Duration>,
    /// `respond-async`: answer 202 unless the work starts at once.
    pub respond_async: bool,
}

/// A `Prefer` header offload cannot act on as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Prefer: {0}")]
pub struct BadPrefer(pub String);

impl Prefer {
    /// Parses every `Prefer` header value of a request, in order. A preference given more
    /// than once counts at its first occurrence (RFC 7240, section 2).
    ///
    /// # Errors
    /// [`BadPrefer`] for a `wait` that is not a whole number of seconds from 0 to
    /// [`MAX_WAIT_SECS`], a `respond-async` with a value, or a header that is not text.
    pub fn parse<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Result<Prefer, BadPrefer> {
        let mut out = Prefer::default();
        let mut seen_wait = false;
        let mut seen_async = false;
        for raw in values {
            let text = std::str::from_utf8(raw)
                .map_err(|_| BadPrefer("the header is not valid text".into()))?;
            for pref in split_outside_quotes(text, ',') {
                // Parameters after `;` qualify a preference; offload's two take none, so
                // they are ignored rather than refused.
                let head = split_outside_quotes(pref, ';').next().unwrap_or("").trim();
                if head.is_empty() {
                    continue;
                }
                let (name, value) = match head.split_once('=') {
                    Some((n, v)) => (n.trim(), Some(unquote(v.trim()))),
                    None => (head, None),
                };
                if name.eq_ignore_ascii_case("wait") {
                    if seen_wait {
                        continue;
                    }
                    seen_wait = true;
                    out.wait = Some(parse_wait(value)?);
                } else if name.eq_ignore_ascii_case("respond-async") {
                    if seen_async {
                        continue;
                    }
                    seen_async = true;
                    if value.is_some_and(|v| !v.is_empty()) {
                        return Err(BadPrefer("respond-async takes no value".into()));
                    }
                    out.respond_async = true;
                }
            }
        }
        Ok(out)
    }

    /// The `Preference-Applied` value for the preferences honoured, if any.
    pub fn applied(wait: Option<Duration>, respond_async: bool) -> Option<String> {
        let mut parts = Vec::new();
        if respond_async {
            parts.push("respond-async".to_string());
        }
        if let Some(w) = wait {
            parts.push(format!("wait={}", w.as_secs()));
        }
        (!parts.is_empty()).then(|| parts.join(", "))
    }
}

fn parse_wait(value: Option<&str>) -> Result<Duration, BadPrefer> {
    let bad = |got: &str| {
        BadPrefer(format!(
            "wait must be a whole number of seconds from 0 to {MAX_WAIT_SECS}: got {:?}",
            got.chars().take(32).collect::<String>()
        ))
    };
    let v = value.ok_or_else(|| bad(""))?;
    // delta-seconds is 1*DIGIT: no sign, no fraction, no unit.
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(v));
    }
    match v.parse::<u64>() {
        Ok(n) if n <= MAX_WAIT_SECS => Ok(Duration::from_secs(n)),
        _ => Err(bad(v)),
    }
}

fn unquote(v: &str) -> &str {
    v.strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(v)
}

/// Splits `s` at `sep`, except inside a quoted string.
fn split_outside_quotes(s: &str, sep: char) -> impl Iterator<Item = &str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn p(values: &[&str]) -> Result<Prefer, BadPrefer> {
        Prefer::parse(values.iter().map(|v| v.as_bytes()))
    }

    #[test]
    fn wait_and_respond_async_are_read_in_any_form_the_rfc_allows() {
        assert_eq!(p(&[]).unwrap(), Prefer::default());
        let both = p(&["respond-async, wait=5"]).unwrap();
        assert_eq!(both.wait, Some(Duration::from_secs(5)));
        assert!(both.respond_async);
        let spread = p(&["Respond-Async; foo=bar", "WAIT = \"7\""]).unwrap();
        assert_eq!(spread.wait, Some(Duration::from_secs(7)));
        assert!(spread.respond_async);
        // The first occurrence counts; unknown preferences are ignored.
        let first = p(&["wait=2, return=minimal, wait=9", "handling=lenient"]).unwrap();
        assert_eq!(first.wait, Some(Duration::from_secs(2)));
        assert!(!first.respond_async);
        assert_eq!(p(&["wait=0"]).unwrap().wait, Some(Duration::ZERO));
        assert_eq!(
            p(&["foo=\"a,b\", wait=3"]).unwrap().wait,
            Some(Duration::from_secs(3))
        );
    }

    #[test]
    fn bad_wait_values_are_refused_with_the_value_named() {
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
            let e = p(&[bad]).unwrap_err();
            assert!(
                e.0.contains("wait") || e.0.contains("respond-async"),
                "{bad}: {e}"
            );
        }
        assert!(p(&["wait=600"]).is_ok());
    }

    #[test]
    fn applied_names_what_was_honoured() {
        assert_eq!(Prefer::applied(None, false), None);
        assert_eq!(
            Prefer::applied(Some(Duration::from_secs(3)), true).as_deref(),
            Some("respond-async, wait=3")
        );
    }
}
