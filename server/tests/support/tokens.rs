//! Tokens for tests, made with the server's own `auth::Verifier` (the crate signs; no
//! test assembles a signature by hand).

use server::auth::{Claims, Grants, Rules, Verifier};
use shared::Pattern;

/// The wall clock in whole seconds since the UNIX epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs()
}

/// Claims for `sub`, valid for `ttl` seconds, publishing on `publish` and subscribing
/// to `subscribe` (patterns).
pub fn claims(sub: &str, ttl: u64, publish: &[&str], subscribe: &[&str]) -> Claims {
    let patterns = |list: &[&str]| {
        list.iter()
            .map(|p| Pattern::new(*p).expect("a pattern"))
            .collect()
    };
    Claims {
        sub: Some(sub.to_owned()),
        exp: now_secs() + ttl,
        nbf: None,
        iat: None,
        sid: None,
        aud: None,
        iss: None,
        sse: Grants {
            publish: patterns(publish),
            subscribe: patterns(subscribe),
            revoke: false,
        },
    }
}

/// `claims` signed with the HS256 `secret`.
pub fn sign(secret: &[u8], claims: &Claims) -> String {
    Verifier::from_secret(secret, Rules::default())
        .expect("a secret of 32 bytes or more")
        .sign(claims)
        .expect("sign a token")
}
