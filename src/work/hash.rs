//! `hash`: argon2id password hashes, the CPU- and memory-heavy task real login endpoints run.
//! Unit `i` hashes the password `offload-{i}` with a fixed salt, so results are deterministic.

use std::ops::Range;

use argon2::{Algorithm, Argon2, Params, Version};

use super::Stopped;

/// The cost of one hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashParams {
    /// Memory per hash in KiB.
    pub memory_kib: u32,
    /// Passes over that memory.
    pub iterations: u32,
}

/// OWASP's minimum argon2id setting: 19 MiB, 2 passes, 1 lane.
impl Default for HashParams {
    fn default() -> Self {
        HashParams {
            memory_kib: 19 * 1024,
            iterations: 2,
        }
    }
}

/// argon2 refuses less than 8 KiB per lane.
pub const MIN_MEMORY_KIB: u32 = 8;
/// 1 GiB per hash is far past any real login setting.
pub const MAX_MEMORY_KIB: u32 = 1024 * 1024;
/// More passes than this is a configuration mistake, not a workload.
pub const MAX_ITERATIONS: u32 = 64;

const SALT: &[u8] = b"offload-fixed-salt";

/// Hashes units `range`, returning the wrapping sum of each hash's first 8 bytes.
pub(super) fn run(
    range: Range<u64>,
    params: HashParams,
    stop: &dyn Fn() -> bool,
) -> Result<u64, Stopped> {
    // The limits were validated when the work was built, so these parameters are accepted.
    let params = Params::new(params.memory_kib, params.iterations, 1, Some(32))
        .expect("hash parameters validated with the limits");
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
    let mut sum = 0u64;
    let mut out = [0u8; 32];
    for i in range {
        if stop() {
            return Err(Stopped);
        }
        let password = format!("offload-{i}");
        argon
            .hash_password_into(password.as_bytes(), SALT, &mut out)
            .expect("argon2 with valid parameters and a 32-byte output cannot fail");
        let mut head = [0u8; 8];
        head.copy_from_slice(&out[..8]);
        sum = sum.wrapping_add(u64::from_le_bytes(head));
    }
    Ok(sum)
}
