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
    let secret = b"a test secret of at least thirty-two bytes";
    let verifier = server::auth::Verifier::from_secret(secret, Default::default()).unwrap();
    let token = verifier
        .sign(
            &serde_json::from_value(serde_json::json!({
                "exp": u64::MAX / 2, "sse": {"publish": ["*"]}
            }))
            .unwrap(),
        )
        .unwrap();
    let server = spawn(Config {
        static_dir: page.path().to_owned(),
        auth: Some(std::sync::Arc::new(verifier)),
        public_channels: vec![shared::Pattern::any()],
        demo_login: true,
        ..config()
    })
    .await;
    use shared::paths;
    for path in paths::ALL {
        let status = match path {
            paths::SHARED_INCREMENT => server.post(path).await.status,
            paths::PUBLISH => {
                let req = server
                    .client
                    .post(server.url(path))
                    .bearer_auth(&token)
                    .header("content-type", "application/json")
                    .body(r#"{"channel":"a","data":1}"#);
                server.send(req, "POST publish").await.status
            }
            paths::EVENTS => server.get(&format!("{path}?channel=a")).await.status(),
            paths::SESSION => {
                let req = server
                    .client
                    .post(server.url(path))
                    .header("content-type", "application/json")
                    .body(r#"{"name":"ada"}"#);
                server.send(req, "POST session").await.status
            }
            paths::SESSION_REFRESH | paths::REVOKE => {
                // Each needs a token: 401 without one says the route is there.
                let status = server.post(path).await.status;
                assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
                StatusCode::OK
            }
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
