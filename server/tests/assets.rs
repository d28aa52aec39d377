//! The page at `/` from `--static-dir`: MIME types, cache and security headers, no path
//! traversal, and a clear 404 when the page has not been built.

mod support;

use reqwest::StatusCode;
use server::Config;
use support::{config, raw_get, spawn, Endpoint as _, TempDir, TestServer};

const INDEX: &str = "<!doctype html><title>sse-counter test page</title>";
const WASM: &[u8] = b"\0asm\x01\0\0\0";
const JS: &str = "export default function init() {}";
/// Sits next to the page directory: no request may ever return it.
const SECRET: &str = "SECRET-OUTSIDE-THE-PAGE-DIRECTORY";
const HASHED_WASM: &str = "web-0123456789abcdef_bg.wasm";
const HASHED_JS: &str = "web-0123456789abcdef.js";

/// `root/dist` holds the page; `root/Cargo.toml` is outside it.
async fn page_server() -> (TestServer, TempDir) {
    let root = TempDir::new("assets");
    let dist = root.path().join("dist");
    std::fs::create_dir(&dist).unwrap();
    std::fs::write(dist.join("index.html"), INDEX).unwrap();
    std::fs::write(dist.join(HASHED_WASM), WASM).unwrap();
    std::fs::write(dist.join(HASHED_JS), JS).unwrap();
    std::fs::write(dist.join("style.css"), "body {}").unwrap();
    std::fs::write(root.path().join("Cargo.toml"), SECRET).unwrap();
    let server = spawn(Config {
        static_dir: dist,
        ..config()
    })
    .await;
    (server, root)
}

#[tokio::test]
async fn index_is_served_and_revalidated() {
    let (server, _root) = page_server().await;
    for path in ["/", "/index.html"] {
        let reply = server.fetch(path).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}");
        assert_eq!(reply.text(), INDEX, "{path}");
        let content_type = reply.header("content-type").expect("content-type");
        assert!(
            content_type.starts_with("text/html"),
            "{path}: {content_type}"
        );
        assert_eq!(reply.header("cache-control"), Some("no-cache"), "{path}");
        assert_eq!(
            reply.header("x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
    }
    // HEAD answers the same head without the body.
    let reply = server
        .send(server.client.head(server.url("/")), "HEAD /")
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.body.is_empty());
    assert_eq!(reply.header("cache-control"), Some("no-cache"));
}

#[tokio::test]
async fn hashed_assets_are_cached_long_with_the_right_type() {
    let (server, _root) = page_server().await;
    let reply = server.fetch(&format!("/{HASHED_WASM}")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, WASM);
    assert_eq!(reply.header("content-type"), Some("application/wasm"));
    assert_eq!(
        reply.header("cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    assert_eq!(reply.header("x-content-type-options"), Some("nosniff"));

    let reply = server.fetch(&format!("/{HASHED_JS}")).await;
    assert_eq!(reply.status, StatusCode::OK);
    let content_type = reply.header("content-type").expect("content-type");
    assert!(content_type.contains("javascript"), "{content_type}");
    assert_eq!(
        reply.header("cache-control"),
        Some("public, max-age=31536000, immutable")
    );

    // A name without trunk's hash may change between builds.
    let reply = server.fetch("/style.css").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply
        .header("content-type")
        .unwrap()
        .starts_with("text/css"));
    assert_eq!(reply.header("cache-control"), Some("no-cache"));
    assert_eq!(reply.header("x-content-type-options"), Some("nosniff"));
}

#[tokio::test]
async fn unknown_files_are_404_json() {
    let (server, _root) = page_server().await;
    let reply = server.fetch("/nope.js").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.error_body().error, "not found");
}

/// Un-normalised paths, sent byte for byte (reqwest would clean them up first), never
/// reach a file outside the page directory.
#[tokio::test]
async fn path_traversal_never_leaves_the_page_directory() {
    let (server, root) = page_server().await;
    let absolute = root.path().join("Cargo.toml");
    let absolute = format!("/{}", absolute.display());
    let targets = [
        "/../Cargo.toml",
        "/%2e%2e/Cargo.toml",
        "/%2E%2E/Cargo.toml",
        "/..%2fCargo.toml",
        "/..%2FCargo.toml",
        "/%2e%2e%2fCargo.toml",
        "/..%5cCargo.toml",
        "/..\\Cargo.toml",
        "/./../Cargo.toml",
        "/dist/../../Cargo.toml",
        "/index.html/../../Cargo.toml",
        "/%2e%2e/%2e%2e/Cargo.toml",
        "/.%2e/Cargo.toml",
        absolute.as_str(),
    ];
    for target in targets {
        let (head, body) = raw_get(server.addr, target, &[]).await;
        let body = String::from_utf8_lossy(&body);
        assert!(
            !body.contains(SECRET),
            "{target} served a file outside the page directory"
        );
        assert!(
            (400..500).contains(&head.status),
            "{target}: a 4xx, not {}",
            head.status
        );
    }
    // The directory is still served normally after all that.
    assert_eq!(server.fetch("/").await.text(), INDEX);
}

#[tokio::test]
async fn a_missing_page_says_how_to_build_it() {
    let server = spawn(config()).await;
    let reply = server.fetch("/").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    let body = reply.error_body();
    assert!(
        body.error.contains("not been built") && body.error.contains("cargo xtask demo"),
        "{body:?}"
    );
    // The API works without the page.
    assert_eq!(server.fetch("/healthz").await.status, StatusCode::OK);
}

#[tokio::test]
async fn the_page_carries_a_strict_content_security_policy() {
    let root = TempDir::new("csp");
    let dist = root.path().join("dist");
    std::fs::create_dir(&dist).unwrap();
    // What trunk writes: an inline module that loads the wasm.
    let inline = "\nimport init from '/web-0123456789abcdef.js';\nawait init();\n";
    std::fs::write(
        dist.join("index.html"),
        format!("<!doctype html><head><script type=\"module\">{inline}</script></head>"),
    )
    .unwrap();
    let server = spawn(Config {
        static_dir: dist,
        ..config()
    })
    .await;
    let reply = server.fetch("/").await;
    assert_eq!(reply.status, StatusCode::OK);
    let csp = reply
        .header("content-security-policy")
        .expect("a content-security-policy on the page");
    let hash =
        server::routes::assets::content_security_policy(&format!("<script>{inline}</script>"));
    assert_eq!(csp, hash, "the policy names the page's own inline script");
    for part in [
        "default-src 'none'",
        "script-src 'self' 'wasm-unsafe-eval' 'sha256-",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(part), "{part} missing from {csp}");
    }
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(reply.header("referrer-policy"), Some("no-referrer"));
}
