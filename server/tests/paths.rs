//! Every path of the contract (`shared::paths::ALL`) is served: a constant in `shared`
//! that the server did not route would be a dead promise to every client.

mod support;

use reqwest::StatusCode;
use server::Config;
use support::{config, spawn, Endpoint as _, TempDir};

#[tokio::test]
async fn every_path_in_the_contract_answers() {
    let page = TempDir::new("paths-page");
    std::fs::write(
        page.path().join("index.html"),
        "<!doctype html><title>t</title>",
    )
    .unwrap();
    let server = spawn(Config {
        static_dir: page.path().to_owned(),
        ..config()
    })
    .await;
    use shared::paths;
    for path in paths::ALL {
        let status = match path {
            paths::SHARED_INCREMENT => server.post(path).await.status,
            // Streams: the head is the answer; the body would not end.
            paths::COUNTER | paths::SHARED => server.get(path).await.status(),
            _ => server.fetch(path).await.status,
        };
        assert_eq!(status, StatusCode::OK, "{path}");
    }
    // The API prefix itself is API: a JSON 404, not the page.
    let reply = server.fetch(&format!("{}nothing", paths::API_PREFIX)).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert!(reply.error_body().error.contains("not found"));
}
