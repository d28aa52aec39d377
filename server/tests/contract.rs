//! The contract and the README say only what the server does, both ways: every route
//! and event name declared in `shared` has a server behind it, and every metric, flag
//! and route the README names is one the server has, and the other way round, so a new
//! metric, flag or route fails here until the README has its row.
//!
//! Routes and event names come from `shared` itself (its source, so that a constant
//! missing from `paths::ALL` is found too), metrics from a real `/metrics` answer, flags
//! from the built binary's `--help` (the clap definition in `main.rs`).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use support::raw::contains;
use support::{config, spawn, Endpoint as _};

const README: &str = include_str!("../../README.md");
const SHARED_SRC: &str = include_str!("../../shared/src/lib.rs");

/// `(NAME, value)` of every `pub const NAME: &str = "value";` in `pub mod module` of
/// the contract's source.
fn str_consts(module: &str) -> Vec<(String, String)> {
    let open = format!("pub mod {module} {{");
    let start = SHARED_SRC
        .find(&open)
        .unwrap_or_else(|| panic!("no `{open}` in shared/src/lib.rs"));
    let body = &SHARED_SRC[start..];
    let body = &body[..body.find("\n}").expect("the module's closing brace")];
    body.lines()
        .filter_map(|l| l.trim().strip_prefix("pub const "))
        .filter_map(|l| {
            let (name, rest) = l.split_once(": &str = \"")?;
            Some((name.to_owned(), rest.strip_suffix("\";")?.to_owned()))
        })
        .collect()
}

/// The text of the README section under `heading`, up to the next heading of the same
/// or a higher level.
fn section(heading: &str) -> &'static str {
    let start = README
        .find(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("no {heading:?} in the README"));
    let level = heading.split(' ').next().unwrap().len();
    let rest = &README[start + heading.len() + 2..];
    let end = rest
        .match_indices("\n#")
        .find(|(at, _)| {
            let hashes = rest[at + 1..].chars().take_while(|c| *c == '#').count();
            hashes <= level
        })
        .map_or(rest.len(), |(at, _)| at);
    &rest[..end]
}

/// The rows of the first table in `text`, as cells (without the header and rule).
fn table_rows(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .filter(|l| l.starts_with('|'))
        .skip(2)
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_owned())
                .collect()
        })
        .collect()
}

/// The words between backticks in `text`.
fn code_spans(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

/// Every `word` that starts with `prefix` and goes on with `[a-z0-9_]` (and `-`, `/`
/// where `also` says), as written anywhere in `text`.
fn tokens<'a>(text: &'a str, prefix: &str, also: &[char]) -> BTreeSet<&'a str> {
    text.match_indices(prefix)
        .filter(|(at, _)| {
            // A whole token, not the tail of a longer word.
            !text[..*at]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        })
        .map(|(at, _)| {
            let rest = &text[at + prefix.len()..];
            let len = rest
                .find(|c: char| {
                    !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || also.contains(&c))
                })
                .unwrap_or(rest.len());
            &text[at..at + prefix.len() + len]
        })
        .collect()
}

#[test]
fn every_path_constant_of_the_contract_is_in_paths_all() {
    let consts = str_consts("paths");
    assert!(consts.len() >= 6, "{consts:?}");
    for (name, value) in consts {
        // The prefix is not a route; `paths.rs` shows it answers JSON 404s.
        if name == "API_PREFIX" {
            continue;
        }
        assert!(
            shared::paths::ALL.contains(&value.as_str()),
            "shared::paths::{name} ({value}) is not in paths::ALL, so no test shows it is served"
        );
    }
}

#[tokio::test]
async fn every_event_name_of_the_contract_is_sent_by_the_server() {
    let server = spawn(server::Config {
        keep_alive: Duration::from_millis(100),
        ..config()
    })
    .await;
    let names = str_consts("events");
    assert!(names.len() >= 5, "{names:?}");
    for (name, value) in names {
        match name.as_str() {
            "END" => {
                let mut s = server.sse("/api/counter?count=1&interval_ms=1", &[]).await;
                s.expect("message").await;
                s.expect(&value).await;
            }
            "RESET" => {
                // An id ahead of the counter (nothing was published): start over.
                let mut s = server.sse("/api/shared", &[("Last-Event-ID", "99")]).await;
                s.expect(&value).await;
            }
            "HEARTBEAT" => {
                let mut s = server.sse("/api/shared", &[]).await;
                s.expect("message").await;
                s.expect(&value).await;
            }
            "KEEP_ALIVE_COMMENT" => {
                let mut conn = server.raw().await;
                conn.get("/api/counter?count=2&interval_ms=3000", &[]).await;
                let comment = format!(": {value}\n");
                conn.read_until("a keep-alive comment", |got| {
                    contains(got, comment.as_bytes())
                })
                .await;
            }
            "LAST_EVENT_ID_HEADER" => {
                let mut s = server
                    .sse("/api/counter?count=4&interval_ms=1", &[(&value, "2")])
                    .await;
                assert_eq!(s.tick().await.num, 3, "a resume after the header's id");
            }
            _ => panic!(
                "shared::events::{name} = {value:?}: no case here shows the server using it; \
                 add one (or it is a dead promise)"
            ),
        }
    }
}

#[test]
fn the_readme_names_every_route_and_only_routes_there_are() {
    let named = tokens(README, "/api/", &['/']);
    for path in &named {
        let path = path.trim_end_matches('/');
        if path == shared::paths::API_PREFIX.trim_end_matches('/') {
            continue;
        }
        assert!(
            shared::paths::ALL.contains(&path),
            "the README names {path}, which is not a route (shared::paths::ALL)"
        );
    }
    for path in shared::paths::ALL {
        if path == shared::paths::INDEX {
            continue;
        }
        assert!(
            tokens(README, path, &['/']).contains(path),
            "the route {path} is not in the README"
        );
    }
}

/// The flags the binary's `--help` lists, `--help` and `--version` left out.
fn flags_of_the_binary() -> BTreeSet<String> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sse-counter"))
        .arg("--help")
        .output()
        .expect("run sse-counter --help");
    assert!(out.status.success(), "{out:?}");
    let help = String::from_utf8(out.stdout).expect("utf-8 help");
    help.lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with('-'))
        .flat_map(|l| {
            l.split([' ', ','])
                .filter(|w| w.starts_with("--"))
                .map(str::to_owned)
                .take(1)
        })
        .filter(|f| f != "--help" && f != "--version")
        .collect()
}

#[test]
fn the_readmes_flags_table_is_the_binarys_flags() {
    let binary = flags_of_the_binary();
    assert!(binary.contains("--addr") && binary.len() > 10, "{binary:?}");
    let rows = table_rows(section("## The server's flags"));
    let readme: BTreeSet<String> = rows
        .iter()
        .flat_map(|row| code_spans(&row[0]))
        .filter(|f| f.starts_with("--"))
        .map(str::to_owned)
        .collect();
    let undocumented: Vec<_> = binary.difference(&readme).collect();
    let unknown: Vec<_> = readme.difference(&binary).collect();
    assert!(
        undocumented.is_empty() && unknown.is_empty(),
        "flags without a row in the README's table: {undocumented:?}; rows for flags the \
         binary does not have: {unknown:?}"
    );
}

/// What `/metrics` serves: each series' type, and the values of its labels.
struct Served {
    types: BTreeMap<String, String>,
    labels: BTreeMap<String, BTreeSet<String>>,
}

fn parse_exposition(text: &str) -> Served {
    let mut types = BTreeMap::new();
    let mut labels: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
            types.insert(name.to_owned(), kind.to_owned());
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let name_end = line.find(['{', ' ']).expect("a sample line");
            let values = labels.entry(line[..name_end].to_owned()).or_default();
            if let Some(inner) = line[name_end..]
                .strip_prefix('{')
                .and_then(|l| l.split_once('}'))
            {
                for pair in inner.0.split(',') {
                    let (_, v) = pair.split_once('=').expect("label=value");
                    values.insert(v.trim_matches('"').to_owned());
                }
            }
        }
    }
    Served { types, labels }
}

#[tokio::test]
async fn the_readmes_metrics_table_is_what_metrics_serves() {
    let server = spawn(config()).await;
    let text = server.fetch(shared::paths::METRICS).await.text();
    let served = parse_exposition(&text);
    assert!(served.types.len() >= 5, "{text}");
    // `| `sse_x{reason}` | counter | ... |`: name, type, meaning.
    let rows: BTreeMap<String, (String, String)> = table_rows(section("### Metrics"))
        .into_iter()
        .map(|row| {
            let name = code_spans(&row[0])[0];
            let name = name.split('{').next().unwrap().to_owned();
            (name, (row[1].clone(), row[2].clone()))
        })
        .collect();
    for (name, kind) in &served.types {
        let (row_kind, meaning) = rows
            .get(name)
            .unwrap_or_else(|| panic!("/metrics serves {name}, which has no row in the README"));
        assert_eq!(row_kind, kind, "the README's type of {name}");
        for value in &served.labels[name] {
            assert!(
                code_spans(meaning).contains(&value.as_str()),
                "{name} has the label value {value:?}, which its README row does not name"
            );
        }
    }
    for name in rows.keys() {
        assert!(
            served.types.contains_key(name),
            "the README's table has {name}, which /metrics does not serve"
        );
    }
    // Anywhere else in the README too, a metric's name is one that is served.
    // The cookie a browser's token travels in shares the prefix; it is no metric.
    for name in tokens(README, "sse_", &[]) {
        if name == shared::channels::TOKEN_COOKIE {
            continue;
        }
        assert!(
            served.types.contains_key(name),
            "the README names {name}, which /metrics does not serve"
        );
    }
}

#[test]
fn the_readme_parsers_find_what_they_look_for() {
    assert_eq!(
        tokens("see `/api/a/b`, /api/ and x/api/c", "/api/", &['/']),
        BTreeSet::from(["/api/", "/api/a/b"])
    );
    assert_eq!(
        tokens("`sse_a{r}` and sse_b_total, not my_sse_c", "sse_", &[]),
        BTreeSet::from(["sse_a", "sse_b_total"])
    );
    let served = parse_exposition(
        "# TYPE sse_a counter\nsse_a{reason=\"x\"} 0\nsse_a{reason=\"y\"} 1\n# TYPE sse_b gauge\nsse_b 3\n",
    );
    assert_eq!(served.types["sse_a"], "counter");
    assert_eq!(
        served.labels["sse_a"],
        BTreeSet::from(["x".into(), "y".into()])
    );
    assert!(served.labels["sse_b"].is_empty());
}
