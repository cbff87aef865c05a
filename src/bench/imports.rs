//! A test that the bench's modules form no import cycle: a module that draws must not be
//! imported back by the data it draws, so each can be read and changed alone. Imports are read
//! from the source (`super::x`, `super::super::x`, `crate::bench::x`, with `{a, b}` groups);
//! comments and test modules are left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Every module under `src/bench` (`node/compare`, `""` for the bench itself) and its source.
fn modules() -> BTreeMap<String, String> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<String, String>) {
        for e in std::fs::read_dir(dir).expect("src/bench") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                walk(&p, root, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let rel = p.strip_prefix(root).unwrap().with_extension("");
                let mut name = rel.to_string_lossy().replace('\\', "/");
                if name == "mod" {
                    name.clear();
                } else if let Some(parent) = name.strip_suffix("/mod") {
                    name = parent.to_string();
                }
                out.insert(name, std::fs::read_to_string(&p).expect("source"));
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/bench");
    let mut out = BTreeMap::new();
    walk(&root, &root, &mut out);
    out
}

/// The code of a file without comments and without its test module.
fn code(src: &str) -> String {
    let src = src.split("#[cfg(test)]\nmod tests").next().unwrap_or("");
    src.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The paths a file names: `super::report::ms` and, for `super::units::{esc, mib}`, each of
/// `super::units::esc` and `super::units::mib`.
fn paths(code: &str) -> Vec<Vec<String>> {
    let b = code.as_bytes();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let starts = (code[i..].starts_with("super::") || code[i..].starts_with("crate::"))
            && (i == 0 || !ident(b[i - 1]));
        if !starts {
            i += 1;
            continue;
        }
        let mut path = Vec::new();
        loop {
            let s = i;
            while i < b.len() && ident(b[i]) {
                i += 1;
            }
            path.push(code[s..i].to_string());
            if code[i..].starts_with("::") && b.get(i + 2).is_some_and(|&c| ident(c)) {
                i += 2;
            } else {
                break;
            }
        }
        if code[i..].starts_with("::{") {
            let end = code[i..].find('}').map_or(b.len(), |e| i + e);
            for item in code[i + 3..end].split(',') {
                let item = item.split(" as ").next().unwrap_or("").trim();
                let item: Vec<String> = item.split("::").map(str::to_string).collect();
                if !item[0].is_empty() && item[0] != "self" {
                    out.push([path.clone(), item].concat());
                }
            }
            i = end;
        }
        out.push(path);
    }
    out
}

/// The module of `modules` a path from module `from` names, if any (the longest match).
fn resolve(from: &str, path: &[String], modules: &BTreeSet<&str>) -> Option<String> {
    let (base, rest): (Vec<&str>, &[String]) = if path[0] == "crate" {
        if path.get(1).map(String::as_str) != Some("bench") {
            return None;
        }
        (Vec::new(), &path[2..])
    } else {
        let mut base: Vec<&str> = from.split('/').filter(|s| !s.is_empty()).collect();
        let mut rest = path;
        while rest.first().is_some_and(|s| s == "super") {
            base.pop();
            rest = &rest[1..];
        }
        (base, rest)
    };
    for n in (1..=rest.len()).rev() {
        let cand: Vec<&str> = base
            .iter()
            .copied()
            .chain(rest[..n].iter().map(String::as_str))
            .collect();
        let cand = cand.join("/");
        if modules.contains(cand.as_str()) {
            return Some(cand);
        }
    }
    None
}

/// Each module's imports of other bench modules (not of its own parents: a child using its
/// parent's types is how Rust nests modules).
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let mods = modules();
    let names: BTreeSet<&str> = mods.keys().map(String::as_str).collect();
    mods.iter()
        .map(|(m, src)| {
            let to = paths(&code(src))
                .iter()
                .filter_map(|p| resolve(m, p, &names))
                .filter(|t| t != m && !t.is_empty() && !m.starts_with(&format!("{t}/")))
                .collect();
            (m.clone(), to)
        })
        .collect()
}

fn cycle(g: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn dfs(
        u: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(u.to_string(), 1);
        stack.push(u.to_string());
        for v in &g[u] {
            match state.get(v.as_str()) {
                Some(1) => {
                    let at = stack.iter().position(|s| s == v).unwrap();
                    let mut c = stack[at..].to_vec();
                    c.push(v.clone());
                    return Some(c);
                }
                Some(_) => {}
                None => {
                    if let Some(c) = dfs(v, g, state, stack) {
                        return Some(c);
                    }
                }
            }
        }
        stack.pop();
        state.insert(u.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for u in g.keys() {
        if !state.contains_key(u.as_str())
            && let Some(c) = dfs(u, g, &mut state, &mut Vec::new())
        {
            return Some(c);
        }
    }
    None
}

/// The room a module is in: `model`, `draw`, `run`, or `""` for the bench's own files.
fn room(module: &str) -> &str {
    module.split('/').next().unwrap_or("")
}

/// The imports that break the rooms' rule: the model imports only the model, a drawing only
/// the model and other drawings.
fn across_rooms(g: &BTreeMap<String, BTreeSet<String>>) -> Vec<(String, String)> {
    let allowed = |from: &str, to: &str| match room(from) {
        "model" => room(to) == "model",
        "draw" => matches!(room(to), "model" | "draw"),
        _ => true,
    };
    g.iter()
        .flat_map(|(m, to)| to.iter().map(move |t| (m.clone(), t.clone())))
        .filter(|(m, t)| !allowed(m, t))
        .collect()
}

#[test]
fn no_bench_module_imports_one_that_imports_it_back() {
    let g = graph();
    // The reader sees real imports: the folder writes every drawing, the verdict reads its
    // rules, the running side fills in the model.
    assert!(g["draw/folder"].contains("draw/html"), "{g:?}");
    assert!(g["draw/verdict"].contains("draw/rules"), "{g:?}");
    assert!(g["run/scenario"].contains("model"), "{g:?}");
    assert_eq!(cycle(&g), None, "an import cycle in src/bench: {g:#?}");
}

#[test]
fn the_model_imports_nothing_that_draws_or_runs_and_drawings_nothing_that_runs() {
    let g = graph();
    assert!(
        g.keys().filter(|m| room(m) == "model").count() >= 5,
        "{g:?}"
    );
    assert_eq!(across_rooms(&g), Vec::new(), "{g:#?}");
}

#[test]
fn a_planted_cycle_is_found() {
    let mut g = graph();
    g.get_mut("draw/limit")
        .unwrap()
        .insert("draw/verdict".into());
    g.get_mut("draw/verdict")
        .unwrap()
        .insert("draw/limit".into());
    let c = cycle(&g).expect("limit -> verdict -> limit");
    assert_eq!(c.first(), c.last());
    assert!(
        c.contains(&"draw/limit".to_string()) && c.contains(&"draw/verdict".to_string()),
        "{c:?}"
    );
}

#[test]
fn a_planted_import_across_rooms_is_found() {
    let mut g = graph();
    g.get_mut("model/run").unwrap().insert("draw/text".into());
    g.get_mut("draw/text")
        .unwrap()
        .insert("run/scenario".into());
    assert_eq!(
        across_rooms(&g),
        [
            ("draw/text".to_string(), "run/scenario".to_string()),
            ("model/run".to_string(), "draw/text".to_string())
        ]
    );
}
