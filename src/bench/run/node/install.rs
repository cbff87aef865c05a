//! Installing the Node servers: their files, embedded in the binary so that an installed
//! `offload` needs no source tree, written to a cache folder outside any repository
//! (`$OFFLOAD_NODE_CACHE`, else `$XDG_CACHE_HOME/offload/node`, else `~/.cache/offload/node`),
//! one folder per fingerprint of the files, with their packages from `npm ci`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use crate::bench::ProgressLine;

/// The Node servers' files, embedded so that an installed `offload` finds them without its
/// source tree: written to the cache folder before `npm ci`.
pub(crate) const FILES: [(&str, &str); 14] = [
    (
        "package.json",
        include_str!("../../../../node/package.json"),
    ),
    (
        "package-lock.json",
        include_str!("../../../../node/package-lock.json"),
    ),
    ("common.js", include_str!("../../../../node/common.js")),
    ("count.js", include_str!("../../../../node/count.js")),
    ("inline.js", include_str!("../../../../node/inline.js")),
    ("worker.js", include_str!("../../../../node/worker.js")),
    (
        "count-thread.js",
        include_str!("../../../../node/count-thread.js"),
    ),
    ("piscina.js", include_str!("../../../../node/piscina.js")),
    (
        "count-task.js",
        include_str!("../../../../node/count-task.js"),
    ),
    ("remote.js", include_str!("../../../../node/remote.js")),
    ("jobs.js", include_str!("../../../../node/jobs.js")),
    ("bullmq.js", include_str!("../../../../node/bullmq.js")),
    (
        "bullmq-worker.js",
        include_str!("../../../../node/bullmq-worker.js"),
    ),
    (
        "calibrate.js",
        include_str!("../../../../node/calibrate.js"),
    ),
];

/// The packages whose versions the report names (pinned in `node/package.json`).
pub(crate) const PACKAGES: [&str; 4] = ["express", "piscina", "bullmq", "ioredis"];

/// The program `name` on `PATH`.
pub(crate) fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// `program --version`'s first line.
pub(crate) fn version_of(program: &Path) -> anyhow::Result<String> {
    let out = Command::new(program)
        .arg("--version")
        .output()
        .with_context(|| format!("running {} --version", program.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text.lines().next().unwrap_or("").trim().to_owned())
}

/// 64-bit FNV-1a of the embedded files: names the cache folder, so a changed server or lock
/// file gets a fresh install and an unchanged one is installed once.
fn fingerprint() -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (name, text) in FILES {
        for b in name.bytes().chain([0]).chain(text.bytes()).chain([0]) {
            h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

/// `OFFLOAD_NODE_CACHE`, else `$XDG_CACHE_HOME/offload/node`, else `~/.cache/offload/node`.
fn cache_root() -> anyhow::Result<PathBuf> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(d) = var("OFFLOAD_NODE_CACHE") {
        return Ok(d);
    }
    let base = var("XDG_CACHE_HOME")
        .or_else(|| var("HOME").map(|h| h.join(".cache")))
        .context(
            "--node: no cache folder for the Node servers: set OFFLOAD_NODE_CACHE (or HOME)",
        )?;
    Ok(base.join("offload").join("node"))
}

/// The servers' folder, written and `npm ci`-installed on first use. Installed into a
/// folder of this process's own and renamed into place, so two benches starting at once
/// never see a half-installed one.
pub(crate) fn install(npm: &Path, progress: &ProgressLine) -> anyhow::Result<PathBuf> {
    let root = cache_root()?;
    let dir = root.join(fingerprint());
    if dir.join(".installed").is_file() {
        return Ok(dir);
    }
    let tmp = root.join(format!("{}.tmp-{}", fingerprint(), std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    for (name, text) in FILES {
        std::fs::write(tmp.join(name), text).with_context(|| format!("writing {name}"))?;
    }
    progress.note(&format!(
        "--node: installing the Node servers' packages (npm ci) into {}",
        dir.display()
    ));
    // No install scripts: the packages run as plain JavaScript (msgpackr falls back from
    // its optional native part), and nothing from the registry runs at install time.
    let out = Command::new(npm)
        .args([
            "ci",
            "--ignore-scripts",
            "--omit=dev",
            "--no-audit",
            "--no-fund",
            "--prefer-offline",
            "--loglevel=error",
        ])
        .current_dir(&tmp)
        .output()
        .context("running npm ci")?;
    if !out.status.success() {
        let _ = std::fs::remove_dir_all(&tmp);
        bail!(
            "--node: npm ci failed ({}) for the Node servers:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    std::fs::write(tmp.join(".installed"), "")?;
    if std::fs::rename(&tmp, &dir).is_err() {
        // Another bench installed the same files first: use its folder.
        let _ = std::fs::remove_dir_all(&tmp);
        if !dir.join(".installed").is_file() {
            bail!(
                "--node: could not move the Node servers into {}",
                dir.display()
            );
        }
    }
    progress.done(&format!(
        "--node: Node servers installed in {}",
        dir.display()
    ));
    Ok(dir)
}

/// The installed versions of [`PACKAGES`], from the embedded lock file.
pub(crate) fn packages() -> BTreeMap<String, String> {
    let lock: serde_json::Value = serde_json::from_str(FILES[1].1).unwrap_or_default();
    PACKAGES
        .iter()
        .map(|p| {
            let v = lock["packages"][format!("node_modules/{p}")]["version"]
                .as_str()
                .unwrap_or("unknown");
            ((*p).to_owned(), v.to_owned())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_of_the_node_folder_is_embedded() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("node");
        let mut on_disk: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != "README.md")
            .collect();
        on_disk.sort();
        let mut embedded: Vec<String> = FILES.iter().map(|(n, _)| (*n).to_owned()).collect();
        embedded.sort();
        assert_eq!(embedded, on_disk);
        let p = packages();
        for name in PACKAGES {
            assert_ne!(p[name], "unknown", "{name} is not in the lock file");
        }
    }
}
