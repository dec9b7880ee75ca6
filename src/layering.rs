//! The direction of the imports, checked: data flows one way (adapters ->
//! Reading -> outbox -> forwarder -> sinks, wired by `service`, driven by
//! `cli`), and so do the `crate::` paths between the top modules.
//!
//! A hand-written scan rather than workspace crates: one table below is the
//! whole rule, it costs no extra link of the crate, and the message names the
//! file and the path to fix. It reads every `.rs` file under `src/`, drops
//! comments and string literals, and maps each `crate::` path (in `use`
//! statements, grouped `use crate::{a, b}` and inline paths) to its top module.
//! A module may use its own top module and any module of a LOWER layer; two
//! modules of the same layer do not use each other (so `outbox` cannot reach
//! into `adapters`). Inside each top module, the modules one level down must
//! not form a cycle (`service::run -> service::control -> service::status ->
//! service::run` was one).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Layer of every top module under `src/`: lower numbers sit lower.
const LAYERS: &[(&str, u8)] = &[
    // Leaves: the data model and small helpers every stage may use.
    ("model", 0),
    ("fsutil", 0),
    ("redact", 0),
    ("logging", 0),
    ("health", 0),
    // One retry delay policy for every stage that reconnects or retries.
    ("backoff", 0),
    // The configuration's types (they use `model` and `logging`).
    ("config", 1),
    // Stages that only know the model and the config. `medtech` (the offline
    // MedTech preview) and `simulate` (device and cloud emulators for tests and
    // the demo) sit here too: an emulator must not share code with what it
    // checks, so it may not use `adapters` or `sinks` (see the exceptions).
    ("adapters", 2),
    ("outbox", 2),
    ("sinks", 2),
    ("medtech", 2),
    ("simulate", 2),
    // Reads the outbox, hands batches to a sink.
    ("forwarder", 3),
    // Wires adapters -> committer -> outbox -> forwarder -> sink.
    ("service", 4),
    // The command line drives everything.
    ("cli", 5),
];

/// Known violations, each with why it is still there. Listed here so they
/// stay visible; an entry that no longer matches anything fails the test, so
/// the list only shrinks. (file, path prefix it may use)
const KNOWN_EXCEPTIONS: &[(&str, &str)] = &[
    // Unit tests of the emulated values decode them with the adapter's
    // decoder (a round trip; the emulator's encoder is its own code).
    ("src/simulate/bluez/values.rs", "crate::adapters::ble::gatt"),
    ("src/simulate/bluez/values.rs", "crate::adapters::device_clock"),
];

fn layer(top: &str) -> Option<u8> {
    LAYERS.iter().find(|(m, _)| *m == top).map(|(_, l)| *l)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut entries: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The source with comments removed and the contents of string and char
/// literals blanked (line breaks kept), so only code is left.
fn code_only(src: &str) -> String {
    let c: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < c.len() {
        let next = c.get(i + 1).copied();
        if c[i] == '/' && next == Some('/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if c[i] == '/' && next == Some('*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if c[i] == '\n' {
                        out.push('\n');
                    }
                    i += 1;
                }
            }
        } else if c[i] == 'r'
            && (next == Some('"') || next == Some('#'))
            && !c.get(i.wrapping_sub(1)).is_some_and(|p| p.is_alphanumeric() || *p == '_')
        {
            // Raw string r"..." or r#"..."#.
            let mut j = i + 1;
            let mut hashes = 0;
            while c.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if c.get(j) != Some(&'"') {
                out.push(c[i]);
                i += 1;
                continue;
            }
            j += 1;
            out.push_str("\"\"");
            'raw: while j < c.len() {
                if c[j] == '"' && (0..hashes).all(|k| c.get(j + 1 + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break 'raw;
                }
                if c[j] == '\n' {
                    out.push('\n');
                }
                j += 1;
            }
            i = j;
        } else if c[i] == '"' {
            i += 1;
            while i < c.len() && c[i] != '"' {
                if c[i] == '\\' {
                    i += 1;
                }
                if c.get(i) == Some(&'\n') {
                    out.push('\n');
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if c[i] == '\'' && (next == Some('\\') || c.get(i + 2) == Some(&'\'')) {
            // A char literal ('a', '\n', '\''); a lifetime has no closing quote.
            i += if next == Some('\\') { 3 } else { 1 };
            while i < c.len() && c[i] != '\'' {
                i += 1;
            }
            i += 1;
            out.push_str("' '");
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

fn is_ident(ch: char) -> bool {
    ch.is_alphanumeric() || ch == '_'
}

/// Every `crate::` path in `code`, as written up to its first `{` (a grouped
/// `use crate::{a::b, c}` gives `crate::a::b` and `crate::c`, one level deep
/// into nested groups is enough for the top module).
fn crate_paths(code: &str) -> Vec<String> {
    let c: Vec<char> = code.chars().collect();
    let mut paths = Vec::new();
    let pat: Vec<char> = "crate::".chars().collect();
    let mut i = 0;
    while i + pat.len() <= c.len() {
        let starts = c[i..i + pat.len()] == pat[..] && (i == 0 || !(is_ident(c[i - 1]) || c[i - 1] == '$' || c[i - 1] == ':'));
        if !starts {
            i += 1;
            continue;
        }
        let mut j = i + pat.len();
        while j < c.len() && c[j].is_whitespace() {
            j += 1;
        }
        if c.get(j) == Some(&'{') {
            // Grouped: the first identifier of each item at depth 1.
            let mut depth = 0;
            let mut at_item = true;
            while j < c.len() {
                match c[j] {
                    '{' => {
                        depth += 1;
                        if depth == 1 {
                            at_item = true;
                        }
                    }
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    ',' if depth == 1 => at_item = true,
                    ch if depth == 1 && at_item && is_ident(ch) => {
                        let start = j;
                        while j < c.len() && (is_ident(c[j]) || c[j] == ':') {
                            j += 1;
                        }
                        let item: String = c[start..j].iter().collect();
                        paths.push(format!("crate::{}", item.trim_end_matches(':')));
                        at_item = false;
                        continue;
                    }
                    _ => {}
                }
                j += 1;
            }
        } else {
            let start = i;
            while j < c.len() && (is_ident(c[j]) || c[j] == ':') {
                j += 1;
            }
            let p: String = c[start..j].iter().collect();
            paths.push(p.trim_end_matches(':').to_string());
        }
        i = j.max(i + 1);
    }
    paths
}

/// `src/a/b.rs` -> ["a", "b"]; `src/a/mod.rs` -> ["a"]; `src/x.rs` -> ["x"].
fn module_of(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel.iter().skip(1).map(|s| s.to_string_lossy().into_owned()).collect();
    if let Some(last) = parts.pop() {
        let stem = last.trim_end_matches(".rs").to_string();
        if stem != "mod" {
            parts.push(stem);
        }
    }
    parts
}

struct Scan {
    /// (file, path as written, top module of the path)
    uses: Vec<(String, String, String)>,
    /// Per top module: second-level module -> second-level modules it uses.
    inner: BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
}

fn scan() -> Scan {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    let mut scan = Scan { uses: Vec::new(), inner: BTreeMap::new() };
    for f in files {
        let rel = f.strip_prefix(root).unwrap_or(&f).to_path_buf();
        let rel_s = rel.to_string_lossy().replace('\\', "/");
        let module = module_of(&rel);
        // The crate root, the binary and this check itself are not a stage.
        if module.is_empty() || module == ["lib"] || module == ["main"] || module == ["layering"] {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&f) else { continue };
        let code = code_only(&text);
        for p in crate_paths(&code) {
            let segs: Vec<&str> = p.split("::").collect();
            let Some(top) = segs.get(1) else { continue };
            scan.uses.push((rel_s.clone(), p.clone(), top.to_string()));
            if *top == module[0] && module.len() >= 2 {
                if let Some(sub) = segs.get(2) {
                    scan.inner.entry(module[0].clone()).or_default().entry(module[1].clone()).or_default().insert(sub.to_string());
                }
            }
        }
        // `super::x` from a file one level down names a sibling.
        if module.len() == 2 && !rel_s.ends_with("/mod.rs") {
            for w in code.split("super::").skip(1) {
                let sub: String = w.chars().take_while(|ch| is_ident(*ch)).collect();
                if !sub.is_empty() {
                    scan.inner.entry(module[0].clone()).or_default().entry(module[1].clone()).or_default().insert(sub);
                }
            }
        }
    }
    // Keep only edges to modules that exist, and not to oneself.
    for subs in scan.inner.values_mut() {
        let names: BTreeSet<String> = subs.keys().cloned().collect();
        for (from, to) in subs.iter_mut() {
            to.retain(|t| names.contains(t) && t != from);
        }
    }
    scan
}

fn violations(scan: &Scan) -> (Vec<String>, BTreeSet<(&'static str, &'static str)>) {
    let mut out = Vec::new();
    let mut used = BTreeSet::new();
    for (file, path, top) in &scan.uses {
        let module = module_of(Path::new(file));
        let from = module[0].as_str();
        if from == top {
            continue;
        }
        let (Some(a), Some(b)) = (layer(from), layer(top)) else {
            out.push(format!("{file} imports {path}: add `{from}` / `{top}` to the layer table in src/layering.rs"));
            continue;
        };
        if b < a {
            continue;
        }
        if let Some(ex) = KNOWN_EXCEPTIONS.iter().find(|(f, p)| f == file && (path == p || path.starts_with(&format!("{p}::")))) {
            used.insert(*ex);
            continue;
        }
        if a == b {
            out.push(format!("{file} imports {path} (`{from}` and `{top}` are both layer {a}: modules of one layer do not use each other)"));
        } else {
            out.push(format!("{file} imports {path} (layer {a} `{from}` imports higher layer {b} `{top}`)"));
        }
    }
    (out, used)
}

/// A cycle among the modules one level down, as "a -> b -> a".
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(n: &str, g: &BTreeMap<String, BTreeSet<String>>, stack: &mut Vec<String>, done: &mut BTreeSet<String>) -> Option<Vec<String>> {
        if let Some(pos) = stack.iter().position(|s| s == n) {
            let mut cyc = stack[pos..].to_vec();
            cyc.push(n.to_string());
            return Some(cyc);
        }
        if done.contains(n) {
            return None;
        }
        stack.push(n.to_string());
        for m in g.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, g, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(n.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for n in graph.keys() {
        if let Some(c) = visit(n, graph, &mut Vec::new(), &mut done) {
            return Some(c);
        }
    }
    None
}

#[test]
fn no_stage_imports_a_higher_one() {
    let scan = scan();
    assert!(scan.uses.len() > 100, "the scan found only {} crate:: paths: is it reading src/?", scan.uses.len());
    let (bad, used) = violations(&scan);
    assert!(bad.is_empty(), "imports against the direction of the data flow:\n  {}", bad.join("\n  "));
    let stale: Vec<_> = KNOWN_EXCEPTIONS.iter().filter(|e| !used.contains(*e)).collect();
    assert!(stale.is_empty(), "known exceptions that no longer occur (remove them from src/layering.rs): {stale:?}");
}

#[test]
fn no_cycle_between_the_modules_of_a_stage() {
    let scan = scan();
    let mut cycles = Vec::new();
    for (top, graph) in &scan.inner {
        if let Some(c) = find_cycle(graph) {
            cycles.push(format!("{top}: {}", c.join(" -> ")));
        }
    }
    assert!(cycles.is_empty(), "module cycles:\n  {}", cycles.join("\n  "));
}

#[test]
fn the_scan_sees_grouped_inline_and_multiline_paths_but_not_comments_or_strings() {
    let src = "use crate::a::B;\nuse crate::{\n    b::C,\n    c::{D, E},\n};\n// use crate::x::Y;\n/* crate::y */\nlet s = \"crate::z\";\nlet r = r#\"crate::w\"#;\nlet c = '\"'; fn f<'a>() { crate::d::f(); $crate::e::g(); }\n";
    let paths = crate_paths(&code_only(src));
    assert_eq!(paths, vec!["crate::a::B", "crate::b::C", "crate::c", "crate::d::f"]);
}

#[test]
fn a_higher_import_and_a_sibling_import_are_reported_with_file_and_layers() {
    let scan = Scan {
        uses: vec![
            ("src/outbox/committer.rs".into(), "crate::service::health::Health".into(), "service".into()),
            ("src/outbox/committer.rs".into(), "crate::adapters::DeviceRegistry".into(), "adapters".into()),
            ("src/service/run.rs".into(), "crate::outbox::Outbox".into(), "outbox".into()),
        ],
        inner: BTreeMap::new(),
    };
    let (bad, _) = violations(&scan);
    assert_eq!(
        bad,
        vec![
            "src/outbox/committer.rs imports crate::service::health::Health (layer 2 `outbox` imports higher layer 4 `service`)",
            "src/outbox/committer.rs imports crate::adapters::DeviceRegistry (`outbox` and `adapters` are both layer 2: modules of one layer do not use each other)",
        ]
    );
    let mut g = BTreeMap::new();
    for (a, b) in [("run", "control"), ("control", "status"), ("status", "run")] {
        g.entry(a.to_string()).or_insert_with(BTreeSet::new).insert(b.to_string());
    }
    assert_eq!(find_cycle(&g), Some(vec!["control".into(), "status".into(), "run".into(), "control".into()]));
}
