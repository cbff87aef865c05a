//! Parsing and validating work specs from a query string or a JSON body. Nothing here runs
//! work; every rejection names what was wrong, with a stable code for clients to match on.

use serde_json::Value;

use super::hash::{MAX_ITERATIONS, MAX_MEMORY_KIB, MIN_MEMORY_KIB};
use super::{DEFAULT_COUNT, HashParams, Kind, Limits, Work};

/// Why a work spec was rejected. Every variant is the client's mistake (HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("unknown work {0:?}: expected one of count, primes, hash")]
    UnknownWork(String),
    #[error("`n` is required when `work` is given")]
    MissingN,
    #[error("`n` must be a whole number from 1 up: {0}")]
    InvalidN(String),
    #[error("`n` = {n} is over the limit for {work}: at most {max}")]
    TooLarge {
        work: &'static str,
        n: u64,
        max: u64,
    },
    #[error("unknown field {0:?}: expected `work` and `n`")]
    UnknownField(String),
    #[error("field {0:?} given more than once")]
    DuplicateField(String),
    #[error("`work` must be a string")]
    InvalidWork,
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    #[error("the body must be a JSON object")]
    NotAnObject,
}

impl SpecError {
    /// A stable, machine-readable code for this error.
    pub fn code(&self) -> &'static str {
        match self {
            SpecError::UnknownWork(_) => "unknown_work",
            SpecError::MissingN => "missing_n",
            SpecError::InvalidN(_) => "invalid_n",
            SpecError::TooLarge { .. } => "n_too_large",
            SpecError::UnknownField(_) => "unknown_field",
            SpecError::DuplicateField(_) => "duplicate_field",
            SpecError::InvalidWork => "invalid_work",
            SpecError::MalformedJson(_) => "malformed_json",
            SpecError::NotAnObject => "malformed_json",
        }
    }
}

impl Limits {
    /// Checks that the limits themselves make sense (hash cost accepted by argon2).
    ///
    /// # Errors
    /// A message naming the setting that is out of range.
    pub fn validate(&self) -> Result<(), String> {
        let h = self.hash;
        if !(MIN_MEMORY_KIB..=MAX_MEMORY_KIB).contains(&h.memory_kib) {
            return Err(format!(
                "hash memory must be {MIN_MEMORY_KIB}..={MAX_MEMORY_KIB} KiB, got {}",
                h.memory_kib
            ));
        }
        if !(1..=MAX_ITERATIONS).contains(&h.iterations) {
            return Err(format!(
                "hash iterations must be 1..={MAX_ITERATIONS}, got {}",
                h.iterations
            ));
        }
        if self.max_count == 0 || self.max_primes == 0 || self.max_hashes == 0 {
            return Err("work size limits must be at least 1".into());
        }
        Ok(())
    }
}

pub(super) fn validate(kind: Kind, n: u64, limits: &Limits) -> Result<Work, SpecError> {
    let Some(max) = limits.max_n(kind) else {
        return Err(SpecError::UnknownWork(kind.name().into()));
    };
    if n == 0 {
        return Err(SpecError::InvalidN("got 0".into()));
    }
    if n > max {
        return Err(SpecError::TooLarge {
            work: kind.name(),
            n,
            max,
        });
    }
    let hash: HashParams = limits.hash;
    Ok(Work { kind, n, hash })
}

fn kind_of(name: &str) -> Result<Kind, SpecError> {
    Kind::from_name(name).ok_or_else(|| SpecError::UnknownWork(truncate(name)))
}

/// Echoes at most 64 characters of client input back in an error message.
fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

/// Strict decimal: digits only, no sign, no spaces, no exponent.
fn parse_n(text: &str) -> Result<u64, SpecError> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SpecError::InvalidN(format!("got {:?}", truncate(text))));
    }
    text.parse::<u64>()
        .map_err(|_| SpecError::InvalidN(format!("got {:?}, too large", truncate(text))))
}

/// Builds the work from its two optional fields. Nothing given: the default count.
fn assemble(work: Option<Kind>, n: Option<u64>, limits: &Limits) -> Result<Work, SpecError> {
    match (work, n) {
        (None, None) => validate(Kind::Count, DEFAULT_COUNT, limits),
        (Some(_), None) => Err(SpecError::MissingN),
        (kind, Some(n)) => validate(kind.unwrap_or(Kind::Count), n, limits),
    }
}

impl Work {
    /// Parses `work=...&n=...` (either may be absent; none means the default count).
    ///
    /// # Errors
    /// [`SpecError`] for unknown or repeated fields, a bad `work` or `n`.
    pub fn from_query(query: &str, limits: &Limits) -> Result<Work, SpecError> {
        let (mut work, mut n) = (None, None);
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            match key.as_ref() {
                "work" if work.is_some() => return Err(SpecError::DuplicateField("work".into())),
                "n" if n.is_some() => return Err(SpecError::DuplicateField("n".into())),
                "work" => work = Some(kind_of(&value)?),
                "n" => n = Some(parse_n(&value)?),
                other => return Err(SpecError::UnknownField(truncate(other))),
            }
        }
        assemble(work, n, limits)
    }

    /// Parses a JSON object `{"work": "...", "n": ...}` (either may be absent).
    ///
    /// # Errors
    /// [`SpecError`] for malformed JSON, unknown fields, a bad `work` or `n`.
    pub fn from_json(body: &[u8], limits: &Limits) -> Result<Work, SpecError> {
        let value: Value =
            serde_json::from_slice(body).map_err(|e| SpecError::MalformedJson(e.to_string()))?;
        let Value::Object(map) = value else {
            return Err(SpecError::NotAnObject);
        };
        let (mut work, mut n) = (None, None);
        for (key, value) in map {
            match key.as_str() {
                "work" => match value {
                    Value::String(s) => work = Some(kind_of(&s)?),
                    _ => return Err(SpecError::InvalidWork),
                },
                "n" => n = Some(json_n(&value)?),
                other => return Err(SpecError::UnknownField(truncate(other))),
            }
        }
        assemble(work, n, limits)
    }

    /// The spec as JSON, the form [`Work::from_json`] reads back (used to hand work to
    /// other processes: the compute service, the queue).
    pub fn to_json(&self) -> Value {
        serde_json::json!({"work": self.kind.name(), "n": self.n})
    }
}

fn json_n(value: &Value) -> Result<u64, SpecError> {
    match value {
        Value::Number(num) => num.as_u64().ok_or_else(|| {
            if num.is_f64() {
                SpecError::InvalidN(format!("got {num}, not a whole number"))
            } else {
                SpecError::InvalidN(format!("got {num}"))
            }
        }),
        other => Err(SpecError::InvalidN(format!(
            "got {}, not a number",
            kind_name(other)
        ))),
    }
}

fn kind_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Result<Work, SpecError> {
        Work::from_query(s, &Limits::default())
    }
    fn j(s: &str) -> Result<Work, SpecError> {
        Work::from_json(s.as_bytes(), &Limits::default())
    }

    #[test]
    fn defaults_and_valid_specs() {
        assert_eq!(q(""), Ok(Work::default_count()));
        assert_eq!(j("{}"), Ok(Work::default_count()));
        let w = q("work=primes&n=2000000").unwrap();
        assert_eq!((w.kind(), w.n()), (Kind::Primes, 2_000_000));
        let w = j(r#"{"work":"hash","n":3}"#).unwrap();
        assert_eq!((w.kind(), w.n()), (Kind::Hash, 3));
        assert_eq!(q("n=5").unwrap().kind(), Kind::Count);
        assert_eq!(j(&w.to_json().to_string()), Ok(w));
        for kind in [Kind::Count, Kind::Primes, Kind::Hash] {
            let w = Work::new(kind, 3, &Limits::default()).unwrap();
            assert_eq!(q(&w.query()), Ok(w), "{}", w.label());
            assert_eq!(w.label(), format!("{}:3", kind.name()));
        }
    }

    #[test]
    fn bad_specs_have_codes() {
        let cases = [
            (q("work=sleep&n=1"), "unknown_work"),
            (q("work=count"), "missing_n"),
            (q("n=0"), "invalid_n"),
            (q("n=-5"), "invalid_n"),
            (q("n=1.5"), "invalid_n"),
            (q("n=abc"), "invalid_n"),
            (q("n=99999999999999999999999"), "invalid_n"),
            (q("n=3000000000"), "n_too_large"),
            (q("n=1&x=2"), "unknown_field"),
            (q("n=1&n=2"), "duplicate_field"),
            (q("work=fault&n=1"), "unknown_work"),
            (j(r#"{"work":"count","n":-1}"#), "invalid_n"),
            (j(r#"{"work":"count","n":1.5}"#), "invalid_n"),
            (j(r#"{"work":"count","n":"5"}"#), "invalid_n"),
            (j(r#"{"work":"count"}"#), "missing_n"),
            (j(r#"{"work":5,"n":1}"#), "invalid_work"),
            (j(r#"{"work":"count","n":1,"extra":1}"#), "unknown_field"),
            (j(r#"{"work":"count","#), "malformed_json"),
            (j("[1,2]"), "malformed_json"),
            (j(r#"{"work":"hash","n":257}"#), "n_too_large"),
        ];
        for (i, (got, code)) in cases.into_iter().enumerate() {
            assert_eq!(got.map_err(|e| e.code()), Err(code), "case {i}");
        }
    }

    #[test]
    fn fault_only_when_allowed() {
        let limits = Limits {
            allow_fault: true,
            ..Limits::default()
        };
        assert_eq!(
            Work::from_query("work=fault&n=1", &limits).unwrap().kind(),
            Kind::Fault
        );
    }
}
