//! The docs as a reader follows them: README.md, `docs/*.md` and `crates/*/README.md`. Every
//! relative link leads to a file that is there (and to a heading that is there, for a link with
//! an anchor), every results file the docs name is in `scripts/results/`, and the README stays
//! short. Plain text checks, no server.

use std::path::{Path, PathBuf};

/// The repository's root.
fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `path` from the repository's root, for messages.
fn shown(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// The Markdown files (`*.md`) directly in `dir`, sorted.
fn markdown_in(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("a directory entry").path();
        if path.extension().and_then(|x| x.to_str()) == Some("md") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// README.md and `docs/*.md`: the pages that give figures.
fn pages() -> Vec<PathBuf> {
    let mut files = vec![root().join("README.md")];
    files.extend(markdown_in(&root().join("docs")));
    files
}

/// The pages, and each crate's README.
fn pages_and_crate_readmes() -> Vec<PathBuf> {
    let mut files = pages();
    let mut crates = Vec::new();
    for entry in std::fs::read_dir(root().join("crates")).expect("crates/") {
        let readme = entry.expect("a crates/ entry").path().join("README.md");
        if readme.is_file() {
            crates.push(readme);
        }
    }
    crates.sort();
    files.extend(crates);
    files
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", shown(path)))
}

/// The lines outside fenced code blocks (```), with their line numbers (from 1).
fn prose_lines(text: &str) -> Vec<(usize, &str)> {
    let mut lines = Vec::new();
    let mut fenced = false;
    for (i, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            lines.push((i + 1, line));
        }
    }
    lines
}

/// A heading's anchor as GitHub makes it: lowercase; letters, digits, `-` and `_` kept; each
/// space a `-`; any other character (backticks, dots, parentheses, colons, slashes) dropped.
fn slug(heading: &str) -> String {
    let mut slug = String::new();
    for c in heading.trim().to_lowercase().chars() {
        if c.is_alphanumeric() || c == '-' || c == '_' {
            slug.push(c);
        } else if c == ' ' {
            slug.push('-');
        }
    }
    slug
}

/// The anchors of a Markdown text's headings (`#` to `######` then a space, outside fences).
fn anchors(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (_, line) in prose_lines(text) {
        let hashes = line.chars().take_while(|c| *c == '#').count();
        if (1..=6).contains(&hashes) && line[hashes..].starts_with(' ') {
            found.push(slug(&line[hashes..]));
        }
    }
    found
}

/// The targets of the Markdown links `[text](target)` outside fences, with their line numbers.
fn link_targets(text: &str) -> Vec<(usize, String)> {
    let mut targets = Vec::new();
    for (number, line) in prose_lines(text) {
        let mut rest = line;
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else {
                break;
            };
            targets.push((number, after[..end].trim().to_owned()));
            rest = &after[end + 1..];
        }
    }
    targets
}

/// What is wrong with `target`, a link in `file`, if anything.
fn broken(file: &Path, own_anchors: &[String], target: &str) -> Option<String> {
    if target.starts_with("http://")
        || target.starts_with("https://")
        || target.starts_with("mailto:")
    {
        return None;
    }
    let (path, anchor) = target.split_once('#').unwrap_or((target, ""));
    if path.is_empty() {
        // An anchor in the same file.
        if own_anchors.iter().any(|a| a == anchor) {
            return None;
        }
        return Some(format!("no heading in this file has the anchor #{anchor}"));
    }
    let dir = file.parent().expect("a file's folder");
    let resolved = dir.join(path);
    if !resolved.exists() {
        return Some(format!("{} is not there", shown(&resolved)));
    }
    if !anchor.is_empty() && path.ends_with(".md") {
        let there = anchors(&read(&resolved));
        if !there.iter().any(|a| a == anchor) {
            return Some(format!(
                "no heading in {} has the anchor #{anchor}",
                shown(&resolved)
            ));
        }
    }
    None
}

/// A reader who follows any relative link in the README, the docs or a crate's README reaches a
/// file that is there, and, for a link with an anchor, the heading it names.
#[test]
fn every_link_in_the_docs_leads_somewhere() {
    let mut failures = Vec::new();
    let mut links = 0;
    for file in pages_and_crate_readmes() {
        let text = read(&file);
        let own = anchors(&text);
        for (line, target) in link_targets(&text) {
            links += 1;
            if let Some(why) = broken(&file, &own, &target) {
                failures.push(format!("{}:{line}: ({target}): {why}", shown(&file)));
            }
        }
    }
    assert!(links > 0, "no links found: the link finder is broken");
    assert!(
        failures.is_empty(),
        "{} of {links} links lead nowhere:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Every results file that the README or a page of docs/ names (`scripts/results/NAME`) is in
/// scripts/results/, so a reader can check the figure it gives.
#[test]
fn every_results_file_the_docs_name_is_there() {
    const PREFIX: &str = "scripts/results/";
    let mut failures = Vec::new();
    let mut named = 0;
    for file in pages() {
        let text = read(&file);
        let mut rest = text.as_str();
        while let Some(at) = rest.find(PREFIX) {
            rest = &rest[at + PREFIX.len()..];
            let len = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-'))
                .unwrap_or(rest.len());
            // A name at the end of a sentence does not take the sentence's full stop.
            let name = rest[..len].trim_end_matches('.');
            if name.is_empty() {
                continue; // the folder itself
            }
            named += 1;
            if !root().join(PREFIX).join(name).is_file() {
                failures.push(format!("{} names {PREFIX}{name}", shown(&file)));
            }
        }
    }
    assert!(named > 0, "no results file named: the finder is broken");
    assert!(
        failures.is_empty(),
        "results files named but not in scripts/results/:\n{}",
        failures.join("\n")
    );
}

/// The README is short enough for a newcomer to read in five minutes: what offload is, how to
/// set it up, one run, the crates in one example, and where to read more.
#[test]
fn the_readme_reads_in_five_minutes() {
    let lines = read(&root().join("README.md")).lines().count();
    assert!(
        lines <= 250,
        "README.md has {lines} lines, over 250: a newcomer reads it in five minutes, so keep it to \
         what offload is, the set-up, one run, the crates in one example and where to read more; \
         the rest goes to docs/, one file per topic"
    );
}

/// An anchor is checked against the headings' anchors as GitHub makes them, so a link that works
/// on GitHub passes and one that does not fails.
#[test]
fn a_slug_is_githubs() {
    assert_eq!(
        slug("Beside the seed's Node servers (`--node`)"),
        "beside-the-seeds-node-servers---node"
    );
    assert_eq!(slug("What %limit means"), "what-limit-means");
    assert_eq!(
        slug("`auto`: run it now if it fits, queue it if it does not"),
        "auto-run-it-now-if-it-fits-queue-it-if-it-does-not"
    );
    assert_eq!(
        slug("The job queue (`queue`) and `offload worker`"),
        "the-job-queue-queue-and-offload-worker"
    );
}
