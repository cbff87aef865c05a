//! The sizes of work the bench's servers and workers are started to accept.

use serde::{Deserialize, Serialize};

use crate::work::{self, Kind, Limits};

/// The largest `n` of each kind of work the bench's servers and workers accept: their
/// defaults, raised to the sizes the run's work asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaxSizes {
    pub count: u64,
    pub primes: u64,
    pub hashes: u64,
}

impl Default for MaxSizes {
    /// The servers' own defaults.
    fn default() -> MaxSizes {
        MaxSizes {
            count: work::DEFAULT_MAX_COUNT,
            primes: work::DEFAULT_MAX_PRIMES,
            hashes: work::DEFAULT_MAX_HASHES,
        }
    }
}

impl MaxSizes {
    /// These sizes, with `kind`'s raised to `n` where it is lower.
    pub fn raised(self, kind: Kind, n: u64) -> MaxSizes {
        let limits = self.limits().raised(kind, n);
        MaxSizes {
            count: limits.max_count,
            primes: limits.max_primes,
            hashes: limits.max_hashes,
        }
    }

    /// The larger size of each kind: a bound raised for one part of the work must hold for
    /// every request of that kind.
    pub fn max(self, other: MaxSizes) -> MaxSizes {
        MaxSizes {
            count: self.count.max(other.count),
            primes: self.primes.max(other.primes),
            hashes: self.hashes.max(other.hashes),
        }
    }

    /// The work limits a server started with these sizes holds to.
    pub fn limits(self) -> Limits {
        Limits {
            max_count: self.count,
            max_primes: self.primes,
            max_hashes: self.hashes,
            ..Limits::default()
        }
    }
}
