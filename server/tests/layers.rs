//! The server's modules keep the layers `docs/architecture.md` draws: each imports only
//! modules of the layers above it, so there is no cycle. Read from the source: a
//! `crate::<module>` in code (not in a comment) of a module is an import of it.

use std::collections::BTreeSet;
use std::path::Path;

/// Top to bottom, as in `docs/architecture.md`; a module may use the layers above its
/// own and the modules of its own layer that are listed before it.
const LAYERS: &[&[&str]] = &[
    &["access", "auth", "conn", "metrics", "error", "ratelimit"],
    &["config"],
    &["sse"],
    &["streams"],
    &["store"],
    &["state"],
    &["routes"],
    &["serve"],
];

/// What `crate::x` may also name: the crate root's own items (no module's).
const ROOT_ITEMS: &[&str] = &["unix_micros", "run", "shutdown_signal"];

/// The crate root's re-exports, and the module each comes from.
const REEXPORTS: &[(&str, &str)] = &[
    ("Config", "config"),
    ("ConfigError", "config"),
    ("MAX_URI_BYTES", "config"),
    ("MAX_HEADERS", "config"),
    ("MAX_HEADER_BYTES", "config"),
    ("AppState", "state"),
    ("run_threads", "serve"),
    ("run_with_metrics", "serve"),
];

fn sources(dir: &Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(std::fs::read_to_string(&path).unwrap());
        }
    }
}

/// `code` with every `//` comment blanked out, lines kept.
fn without_comments(code: &str) -> String {
    code.lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The leading identifier of `s`.
fn ident(s: &str) -> String {
    s.trim_start()
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// The crate modules that `code` names as `crate::<m>`, or in a group
/// `crate::{<m>, <n>::…}` (over several lines too), outside comments.
fn imports(code: &str) -> BTreeSet<String> {
    let code = without_comments(code);
    let mut out = BTreeSet::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        let trimmed = rest.trim_start();
        if let Some(group) = trimmed.strip_prefix('{') {
            // The group's top-level items, each named by its first identifier.
            let (mut depth, mut item_start, mut end) = (0usize, 0usize, group.len());
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        end = i;
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.insert(ident(&group[item_start..i]));
                        item_start = i + 1;
                    }
                    _ => {}
                }
            }
            out.insert(ident(&group[item_start..end]));
        } else {
            out.insert(ident(rest));
        }
    }
    out.remove("");
    out
}

#[test]
fn every_module_imports_only_the_layers_above_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut problems = Vec::new();
    let order: Vec<&str> = LAYERS.iter().flat_map(|l| l.iter().copied()).collect();
    for (layer_index, layer) in LAYERS.iter().enumerate() {
        for module in *layer {
            let mut code = Vec::new();
            let dir = src.join(module);
            if dir.is_dir() {
                sources(&dir, &mut code);
            } else {
                code.push(std::fs::read_to_string(src.join(format!("{module}.rs"))).unwrap());
            }
            let allowed: BTreeSet<&str> = LAYERS[..layer_index]
                .iter()
                .flat_map(|l| l.iter().copied())
                .chain(layer.iter().copied().take_while(|m| m != module))
                .collect();
            for used in code.iter().flat_map(|c| imports(c)) {
                let used = REEXPORTS
                    .iter()
                    .find(|(item, _)| *item == used)
                    .map_or(used, |(_, m)| (*m).to_owned());
                if used == *module || ROOT_ITEMS.contains(&used.as_str()) {
                    continue;
                }
                assert!(
                    order.contains(&used.as_str()),
                    "{module} uses crate::{used}, a module missing from LAYERS"
                );
                if !allowed.contains(used.as_str()) {
                    problems.push(format!(
                        "{module} uses crate::{used}, which is not above it"
                    ));
                }
            }
        }
    }
    // Every module of the crate is in a layer.
    for entry in std::fs::read_dir(&src).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        let module = name.trim_end_matches(".rs");
        if module != "lib" && module != "main" {
            assert!(
                order.contains(&module),
                "{module} is in no layer: add it to LAYERS and docs/architecture.md"
            );
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn the_check_sees_an_import_and_ignores_comments() {
    let found = imports("use crate::store::Store; // crate::serve\n/// crate::routes\nlet x = crate::sse::frame::json;");
    assert_eq!(
        found,
        BTreeSet::from(["store".to_owned(), "sse".to_owned()])
    );
}

#[test]
fn the_check_sees_every_module_of_a_group_over_several_lines() {
    let found = imports(
        "use crate::{error, routes::gate};\nuse crate::{\n    sse::{frame, body},\n    // crate::serve\n    store,\n};",
    );
    let want = ["error", "routes", "sse", "store"].map(str::to_owned);
    assert_eq!(found, BTreeSet::from(want));
}
