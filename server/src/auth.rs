//! Bearer tokens: the key a server trusts ([`Verifier`]), the claims a token carries
//! ([`Claims`], with the channel grants of [`Grants`]) and why one is refused
//! ([`TokenError`]).
//!
//! Every signature is checked by the `jsonwebtoken` crate, never here. A verifier accepts
//! only the one algorithm of its key (so neither `alg: none` nor an HS256 token made
//! with an RSA public key as its secret passes), requires `exp`, honours `nbf`, allows
//! [`LEEWAY_SECS`] of clock skew, and requires and checks `aud` and `iss` when its
//! [`Rules`] name them. A token that names an audience is refused by a verifier whose
//! rules name none, as RFC 7519 §4.1.3 requires of a principal not in `aud`.
//!
//! A token that verified is remembered by its SHA-256, with its claims (at most
//! [`VERIFIED_CACHE_BYTES`]): the same string again is not verified again, but its `exp`
//! and `nbf` are checked again against the clock. A refusal is never kept.
//!
//! A leaf module: it uses `shared` and no other module of this crate.

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use shared::Pattern;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The clock skew allowed on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: u64 = 5;

/// What the tokens verified already may hold at most, in bytes (each counted as the
/// token's length, which bounds its claims', and [`VERIFIED_ENTRY_BYTES`]).
pub const VERIFIED_CACHE_BYTES: u64 = 4 << 20;

/// What an entry of the cache of verified tokens is counted as, besides the token's
/// length: its key, the claims' own fields and the cache's bookkeeping.
pub const VERIFIED_ENTRY_BYTES: u64 = 256;

/// The shortest HS256 secret accepted, in bytes: as many as the hash's output (RFC 7518
/// §3.2 requires a key of at least that size).
pub const MIN_SECRET_BYTES: usize = 32;

/// What a token must say besides its signature and times, when configured.
#[derive(Default, Clone, Debug, PartialEq, Eq)]
pub struct Rules {
    /// `--jwt-audience`: when set, a token must carry `aud` equal to it.
    pub audience: Option<String>,
    /// `--jwt-issuer`: when set, a token must carry `iss` equal to it.
    pub issuer: Option<String>,
}

/// The claims of a token. Unknown claims are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Who the token is for: the publisher's name in events and rate limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// Expiry, in seconds since the UNIX epoch; required.
    pub exp: u64,
    /// Not valid before, in seconds since the UNIX epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issued at, in seconds since the UNIX epoch (informative: not checked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// A session id: every stream opened with it can be revoked at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// A single audience (a token with an array of audiences is refused as malformed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// What the token allows on channels (none when absent).
    #[serde(default)]
    pub sse: Grants,
}

/// The `sse` claim: `{"publish": [patterns], "subscribe": [patterns], "revoke": bool}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grants {
    #[serde(default)]
    pub publish: Vec<Pattern>,
    #[serde(default)]
    pub subscribe: Vec<Pattern>,
    /// Whether the holder may revoke sessions (`POST /api/revoke`).
    #[serde(default)]
    pub revoke: bool,
}

impl Grants {
    /// Whether some publish pattern covers `channel` (whose name the caller has
    /// validated; whether `counter` is ever publishable is the route's decision).
    pub fn may_publish(&self, channel: &str) -> bool {
        self.publish.iter().any(|p| p.matches(channel))
    }

    /// Whether some subscribe pattern covers `channel`.
    pub fn may_subscribe(&self, channel: &str) -> bool {
        self.subscribe.iter().any(|p| p.matches(channel))
    }
}

/// 32 random bytes from the operating system, hex-encoded: a signing secret of one
/// run (`--demo-login` without a key), or a session id.
pub fn random_secret() -> Vec<u8> {
    random_hex(32).into_bytes()
}

/// `bytes` random bytes from the operating system, as lowercase hex.
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    // The OS's generator; without one nothing here can be kept secret.
    getrandom::fill(&mut buf).expect("the operating system's random number generator");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// Why a token is refused. No message repeats the token or any part of it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("no token was given")]
    Missing,
    #[error("the token is not a well-formed JWT with the claims this server reads")]
    Malformed,
    #[error("the token's signature does not verify with this server's key")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet (nbf)")]
    NotYetValid,
    #[error("the token is not signed with the algorithm of this server's key")]
    WrongAlgorithm,
    #[error("the token's audience (aud) is missing or not this server's")]
    WrongAudience,
    #[error("the token's issuer (iss) is missing or not the one this server trusts")]
    WrongIssuer,
    #[error("{0}")]
    Other(String),
}

/// A key the server cannot use; from a file, the error names it.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read {}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{}: {error}", path.display())]
    InFile { path: PathBuf, error: Box<KeyError> },
    #[error("the HS256 secret is {len} bytes; it must be at least {MIN_SECRET_BYTES} (e.g. `openssl rand -hex 32`)")]
    SecretTooShort { len: usize },
    #[error("this is a private key: give the public key (`openssl pkey -in KEY -pubout`)")]
    PrivateKey,
    #[error("not a PEM public key of Ed25519 (EdDSA), P-256 (ES256) or RSA (RS256)")]
    NotAPublicKey,
}

/// The key that tokens are checked with, and the rules they must follow.
pub struct Verifier {
    algorithm: Algorithm,
    decoding: DecodingKey,
    /// The same secret as `decoding`, for HS256; `None` for a public key.
    encoding: Option<EncodingKey>,
    validation: Validation,
    rules: Rules,
    /// The tokens that verified, with their claims. A publisher sends the same token
    /// with every request, and checking it again (two base64 and JSON parses and the
    /// signature) was half of a publish's own cost (`docs/performance.md`). Keyed by
    /// the token's SHA-256, so only the very string that verified is found and no
    /// token is kept in memory, nor compared byte by byte with what a client sends;
    /// the times are checked again on every look-up; bounded by
    /// [`VERIFIED_CACHE_BYTES`].
    // Bench: publishes per second against increments, `docs/performance.md` § 6.
    verified: quick_cache::sync::Cache<TokenDigest, Verified, TokenWeight>,
}

/// The SHA-256 of a token: its key in the cache of verified tokens.
type TokenDigest = [u8; 32];

fn digest(token: &str) -> TokenDigest {
    use sha2::Digest as _;
    sha2::Sha256::digest(token.as_bytes()).into()
}

/// A verified token's claims, and the token's length (what its claims may take).
#[derive(Clone)]
struct Verified {
    claims: Arc<Claims>,
    token_len: usize,
}

/// A verified token's weight in the cache: its length and the entry's own.
#[derive(Clone)]
struct TokenWeight;

impl quick_cache::Weighter<TokenDigest, Verified> for TokenWeight {
    fn weight(&self, _: &TokenDigest, verified: &Verified) -> u64 {
        verified.token_len as u64 + VERIFIED_ENTRY_BYTES
    }
}

/// Never prints key material.
impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("algorithm", &self.algorithm)
            .field("rules", &self.rules)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// HS256 with `secret`; a secret under [`MIN_SECRET_BYTES`] is an error.
    pub fn from_secret(secret: &[u8], rules: Rules) -> Result<Verifier, KeyError> {
        if secret.len() < MIN_SECRET_BYTES {
            return Err(KeyError::SecretTooShort { len: secret.len() });
        }
        // Neither fails on a non-empty secret.
        let too_short = |_| KeyError::SecretTooShort { len: secret.len() };
        let decoding = DecodingKey::from_secret(secret).map_err(too_short)?;
        let encoding = EncodingKey::from_secret(secret).map_err(too_short)?;
        Ok(Verifier::new(
            Algorithm::HS256,
            decoding,
            Some(encoding),
            rules,
        ))
    }

    /// A PEM public key (`BEGIN PUBLIC KEY`, or `BEGIN RSA PUBLIC KEY`): EdDSA for an
    /// Ed25519 key, ES256 for a P-256 key, RS256 for an RSA key.
    pub fn from_public_key_pem(pem: &[u8], rules: Rules) -> Result<Verifier, KeyError> {
        let text = String::from_utf8_lossy(pem);
        let label = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("-----BEGIN "))
            .and_then(|l| l.strip_suffix("-----"));
        match label {
            Some("PUBLIC KEY" | "RSA PUBLIC KEY") => {}
            Some(l) if l.ends_with("PRIVATE KEY") => return Err(KeyError::PrivateKey),
            _ => return Err(KeyError::NotAPublicKey),
        }
        let (algorithm, decoding) = if let Ok(key) = DecodingKey::from_ed_pem(pem) {
            (Algorithm::EdDSA, key)
        } else if let Ok(key) = DecodingKey::from_ec_pem(pem) {
            (Algorithm::ES256, key)
        } else if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
            (Algorithm::RS256, key)
        } else {
            return Err(KeyError::NotAPublicKey);
        };
        // Let the crypto backend parse the key now, so that a key of another curve
        // (P-384) or a damaged one stops the start instead of failing every request.
        // (There is always a provider: the `rust_crypto` feature installs one.)
        if let Some(provider) = jsonwebtoken::crypto::CryptoProvider::try_get_default() {
            (provider.verifier_factory)(&algorithm, &decoding)
                .map_err(|_| KeyError::NotAPublicKey)?;
        }
        Ok(Verifier::new(algorithm, decoding, None, rules))
    }

    /// [`Verifier::from_secret`] with the contents of `path`; a trailing newline (as
    /// `openssl rand -hex 32 > FILE` writes) is not part of the secret.
    pub fn from_secret_file(path: &Path, rules: Rules) -> Result<Verifier, KeyError> {
        let bytes = read(path)?;
        let secret = bytes
            .strip_suffix(b"\n")
            .map(|s| s.strip_suffix(b"\r").unwrap_or(s))
            .unwrap_or(&bytes);
        Verifier::from_secret(secret, rules).map_err(|e| in_file(path, e))
    }

    /// [`Verifier::from_public_key_pem`] with the contents of `path`.
    pub fn from_public_key_file(path: &Path, rules: Rules) -> Result<Verifier, KeyError> {
        let bytes = read(path)?;
        Verifier::from_public_key_pem(&bytes, rules).map_err(|e| in_file(path, e))
    }

    fn new(
        algorithm: Algorithm,
        decoding: DecodingKey,
        encoding: Option<EncodingKey>,
        rules: Rules,
    ) -> Verifier {
        let mut validation = Validation::new(algorithm);
        validation.leeway = LEEWAY_SECS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        let mut required = vec!["exp"];
        if let Some(aud) = &rules.audience {
            validation.set_audience(&[aud]);
            required.push("aud");
        }
        if let Some(iss) = &rules.issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        Verifier {
            algorithm,
            decoding,
            encoding,
            validation,
            rules,
            verified: quick_cache::sync::Cache::with_weighter(
                (VERIFIED_CACHE_BYTES / (VERIFIED_ENTRY_BYTES * 2)) as usize,
                VERIFIED_CACHE_BYTES,
                TokenWeight,
            ),
        }
    }

    /// The rules tokens must follow here, for tokens this server makes itself.
    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// The algorithm of the key, as a token's `alg` names it (`HS256`, `EdDSA`, ...).
    pub fn algorithm(&self) -> &'static str {
        match self.algorithm {
            Algorithm::HS256 => "HS256",
            Algorithm::EdDSA => "EdDSA",
            Algorithm::ES256 => "ES256",
            Algorithm::RS256 => "RS256",
            // No constructor makes another.
            _ => "unknown",
        }
    }

    /// Checks `token` and returns its claims.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        self.verify_at(token, jsonwebtoken::get_current_timestamp())
    }

    /// [`Verifier::verify`] at `now` (seconds since the UNIX epoch), the time a token
    /// verified before is checked against; one not seen before is checked by the crate
    /// at its own clock.
    fn verify_at(&self, token: &str, now: u64) -> Result<Claims, TokenError> {
        let key = digest(token);
        if let Some(hit) = self.verified.get(&key) {
            return match still_valid(&hit.claims, now) {
                Ok(()) => Ok(Claims::clone(&hit.claims)),
                Err(err) => {
                    self.verified.remove(&key);
                    Err(err)
                }
            };
        }
        if token.trim().is_empty() {
            return Err(TokenError::Missing);
        }
        // Name the refusal of another algorithm (`none` included, which the crate cannot
        // even parse) as such; the crate checks the algorithm again itself.
        match header_alg(token) {
            None => return Err(TokenError::Malformed),
            Some(alg) if alg != self.algorithm() => return Err(TokenError::WrongAlgorithm),
            Some(_) => {}
        }
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| token_error(&e))?;
        let verified = Verified {
            claims: Arc::new(claims.clone()),
            token_len: token.len(),
        };
        self.verified.insert(key, verified);
        Ok(claims)
    }

    /// How many verified tokens the cache holds, and their weight in bytes.
    #[cfg(test)]
    fn cached(&self) -> (usize, u64) {
        (self.verified.len(), self.verified.weight())
    }

    /// Signs `claims` with the HS256 secret (`sse-counter token`, the demo sign-in);
    /// a verifier of a public key cannot sign.
    pub fn sign(&self, claims: &Claims) -> Result<String, TokenError> {
        let Some(key) = &self.encoding else {
            return Err(TokenError::Other(format!(
                "this server's {} public key can verify tokens but not sign them",
                self.algorithm()
            )));
        };
        jsonwebtoken::encode(&Header::new(self.algorithm), claims, key)
            .map_err(|e| TokenError::Other(format!("cannot sign the token: {e}")))
    }
}

/// Whether the claims of a token that verified before are still valid at `now`: the
/// crate's own checks of `exp` and `nbf`, with the same leeway.
fn still_valid(claims: &Claims, now: u64) -> Result<(), TokenError> {
    if claims.exp.saturating_add(LEEWAY_SECS) < now {
        return Err(TokenError::Expired);
    }
    if claims
        .nbf
        .is_some_and(|nbf| nbf > now.saturating_add(LEEWAY_SECS))
    {
        return Err(TokenError::NotYetValid);
    }
    Ok(())
}

fn read(path: &Path) -> Result<Vec<u8>, KeyError> {
    std::fs::read(path).map_err(|error| KeyError::Read {
        path: path.to_owned(),
        error,
    })
}

fn in_file(path: &Path, error: KeyError) -> KeyError {
    KeyError::InFile {
        path: path.to_owned(),
        error: Box::new(error),
    }
}

/// The `alg` a token's header names, if the header is base64url JSON with a string
/// `alg`. Only for naming a refusal: nothing is trusted from it.
fn header_alg(token: &str) -> Option<String> {
    use base64::Engine as _;
    #[derive(Deserialize)]
    struct Head {
        alg: String,
    }
    let (head, _) = token.split_once('.')?;
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(head)
        .ok()?;
    serde_json::from_slice::<Head>(&json).ok().map(|h| h.alg)
}

fn token_error(err: &jsonwebtoken::errors::Error) -> TokenError {
    match err.kind() {
        ErrorKind::InvalidSignature => TokenError::BadSignature,
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => TokenError::WrongAlgorithm,
        ErrorKind::InvalidAudience => TokenError::WrongAudience,
        ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
        ErrorKind::MissingRequiredClaim(c) | ErrorKind::InvalidClaimFormat(c) if c == "aud" => {
            TokenError::WrongAudience
        }
        ErrorKind::MissingRequiredClaim(c) | ErrorKind::InvalidClaimFormat(c) if c == "iss" => {
            TokenError::WrongIssuer
        }
        ErrorKind::InvalidToken
        | ErrorKind::MissingRequiredClaim(_)
        | ErrorKind::InvalidClaimFormat(_)
        | ErrorKind::Base64(_)
        | ErrorKind::Json(_)
        | ErrorKind::Utf8(_) => TokenError::Malformed,
        _ => TokenError::Other(format!("the token cannot be checked: {err}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use jsonwebtoken::get_current_timestamp as now;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    /// Made once with openssl; see `tests/data/README.md`. Test-only: it is public.
    const RSA_PRIVATE: &[u8] = include_bytes!("../tests/data/test-only-rsa-private.pem");
    const RSA_PUBLIC: &[u8] = include_bytes!("../tests/data/test-only-rsa-public.pem");

    fn claims(exp: u64) -> Claims {
        Claims {
            sub: Some("ada".into()),
            exp,
            nbf: None,
            iat: Some(now()),
            sid: Some("s1".into()),
            aud: None,
            iss: None,
            sse: Grants {
                publish: vec![Pattern::new("rooms/*").unwrap()],
                subscribe: vec![Pattern::new("users/ada").unwrap()],
                revoke: false,
            },
        }
    }

    /// A token made by the crate's encoder, not by `Verifier::sign`.
    fn encode(alg: Algorithm, key: &EncodingKey, claims: &impl Serialize) -> String {
        jsonwebtoken::encode(&Header::new(alg), claims, key).unwrap()
    }

    fn hs256(claims: &impl Serialize) -> String {
        encode(
            Algorithm::HS256,
            &EncodingKey::from_secret(SECRET).unwrap(),
            claims,
        )
    }

    fn verifier() -> Verifier {
        Verifier::from_secret(SECRET, Rules::default()).unwrap()
    }

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    #[test]
    fn an_hs256_token_verifies_with_its_claims() {
        let c = claims(now() + 600);
        let got = verifier().verify(&hs256(&c)).unwrap();
        assert_eq!(got, c);
        assert!(got.sse.may_publish("rooms/a/b"));
        assert!(!got.sse.may_publish("users/ada"));
        assert!(got.sse.may_subscribe("users/ada"));
        assert!(!got.sse.may_subscribe("users/bob"));
        assert!(!got.sse.revoke);
    }

    #[test]
    fn grants_and_optional_claims_may_be_absent() {
        let token = hs256(&serde_json::json!({ "exp": now() + 60, "jti": "ignored" }));
        let got = verifier().verify(&token).unwrap();
        assert_eq!(got.sse, Grants::default());
        assert_eq!((got.sub, got.sid), (None, None));
        // A grant that is not a pattern is refused, not dropped.
        let token = hs256(&serde_json::json!({ "exp": now() + 60, "sse": { "publish": ["a*b"] } }));
        assert_eq!(verifier().verify(&token), Err(TokenError::Malformed));
        // `exp` is required.
        let token = hs256(&serde_json::json!({ "sub": "ada" }));
        assert_eq!(verifier().verify(&token), Err(TokenError::Malformed));
    }

    #[test]
    fn a_verified_token_is_found_again_only_while_its_times_allow() {
        let v = verifier();
        let t = now();
        let c = claims(t + 60);
        let token = hs256(&c);
        assert_eq!(v.verify(&token), Ok(c.clone()));
        assert_eq!(v.cached().0, 1);
        assert_eq!(v.verify_at(&token, t + 30), Ok(c.clone()));
        assert_eq!(v.verify_at(&token, t + 60 + LEEWAY_SECS), Ok(c));
        assert_eq!(v.cached().0, 1, "found, not verified and added again");
        // Past `exp` and the leeway the cached claims are refused, and forgotten.
        assert_eq!(
            v.verify_at(&token, t + 60 + LEEWAY_SECS + 1),
            Err(TokenError::Expired)
        );
        assert_eq!(v.cached().0, 0);
        // `nbf` likewise, should the clock go back.
        let mut c = claims(t + 600);
        c.nbf = Some(t);
        let token = hs256(&c);
        assert!(v.verify(&token).is_ok());
        assert_eq!(
            v.verify_at(&token, t - LEEWAY_SECS - 1),
            Err(TokenError::NotYetValid)
        );
    }

    #[test]
    fn only_the_very_string_that_verified_is_found() {
        let v = verifier();
        let c = claims(now() + 600);
        let token = hs256(&c);
        assert!(v.verify(&token).is_ok());
        // The same header and claims with another signature: checked, and refused.
        let (signed, sig) = token.rsplit_once('.').unwrap();
        let flipped = if sig.starts_with('A') { "B" } else { "A" };
        let forged = format!("{signed}.{flipped}{}", &sig[1..]);
        assert_eq!(v.verify(&forged), Err(TokenError::BadSignature));
        // Signed with another key.
        let other = encode(
            Algorithm::HS256,
            &EncodingKey::from_secret(b"another secret of thirty-two bytes at least").unwrap(),
            &c,
        );
        assert_eq!(v.verify(&other), Err(TokenError::BadSignature));
        // A verifier of another key has a cache of its own.
        let elsewhere =
            Verifier::from_secret(b"a third secret, as long as it must be!!", Rules::default())
                .unwrap();
        assert_eq!(elsewhere.verify(&token), Err(TokenError::BadSignature));
        assert_eq!(v.cached().0, 1, "refusals are not kept");
    }

    #[test]
    fn the_cache_of_verified_tokens_is_bounded_by_bytes() {
        let v = verifier();
        let big = "x".repeat(4096);
        for i in 0..2_000 {
            let mut c = claims(now() + 600);
            c.sub = Some(format!("{i}-{big}"));
            assert!(v.verify(&hs256(&c)).is_ok());
        }
        let (tokens, bytes) = v.cached();
        assert!(bytes <= VERIFIED_CACHE_BYTES, "{bytes} bytes in the cache");
        assert!(tokens < 2_000 && tokens > 100, "{tokens} tokens kept");
    }

    #[test]
    fn expiry_has_five_seconds_of_leeway_and_no_more() {
        let v = verifier();
        assert!(v.verify(&hs256(&claims(now() - 2))).is_ok());
        assert_eq!(
            v.verify(&hs256(&claims(now() - LEEWAY_SECS - 5))),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn a_token_not_valid_yet_is_refused() {
        let mut c = claims(now() + 600);
        c.nbf = Some(now() + 60);
        assert_eq!(verifier().verify(&hs256(&c)), Err(TokenError::NotYetValid));
        c.nbf = Some(now() + 2);
        assert!(verifier().verify(&hs256(&c)).is_ok(), "within the leeway");
    }

    #[test]
    fn alg_none_is_refused() {
        let body = serde_json::to_vec(&claims(now() + 600)).unwrap();
        for header in [
            r#"{"alg":"none"}"#,
            r#"{"alg":"none","typ":"JWT"}"#,
            r#"{"alg":"HS256"}"#,
        ] {
            let token = format!("{}.{}.", b64(header.as_bytes()), b64(&body));
            let err = verifier().verify(&token).unwrap_err();
            let expected = if header.contains("none") {
                TokenError::WrongAlgorithm
            } else {
                TokenError::BadSignature
            };
            assert_eq!(err, expected, "{header}");
        }
    }

    #[test]
    fn another_secret_or_a_changed_body_is_a_bad_signature() {
        let other = encode(
            Algorithm::HS256,
            &EncodingKey::from_secret(b"another secret, 32 bytes or more!").unwrap(),
            &claims(now() + 600),
        );
        assert_eq!(verifier().verify(&other), Err(TokenError::BadSignature));
        // The signature of one body on another: a grant added after signing.
        let token = hs256(&claims(now() + 600));
        let (head, rest) = token.split_once('.').unwrap();
        let (_, sig) = rest.split_once('.').unwrap();
        let mut wider = claims(now() + 600);
        wider.sse.publish.push(Pattern::any());
        let forged = format!("{head}.{}.{sig}", b64(&serde_json::to_vec(&wider).unwrap()));
        assert_eq!(verifier().verify(&forged), Err(TokenError::BadSignature));
    }

    #[test]
    fn garbage_is_malformed_or_missing() {
        let v = verifier();
        assert_eq!(v.verify(""), Err(TokenError::Missing));
        assert_eq!(v.verify("  "), Err(TokenError::Missing));
        for bad in ["x", "a.b", "a.b.c", "a.b.c.d", "....", "eyJ.eyJ.x"] {
            assert_eq!(v.verify(bad), Err(TokenError::Malformed), "{bad:?}");
        }
        let token = hs256(&claims(now() + 600));
        assert_eq!(
            v.verify(&format!("{token}.x")),
            Err(TokenError::Malformed),
            "a fourth part"
        );
    }

    #[test]
    fn messages_never_echo_the_token() {
        let token = hs256(&claims(now() - 600));
        let err = verifier().verify(&token).unwrap_err();
        let text = err.to_string();
        assert_eq!(text, "the token has expired");
        for part in token.split('.') {
            assert!(!text.contains(part));
        }
    }

    #[test]
    fn audience_and_issuer_are_required_when_configured() {
        let rules = Rules {
            audience: Some("sse".into()),
            issuer: Some("https://id.example".into()),
        };
        let v = Verifier::from_secret(SECRET, rules.clone()).unwrap();
        let mut c = claims(now() + 600);
        // Which missing claim is named first is the crate's choice.
        let both = v.verify(&hs256(&c)).unwrap_err();
        assert!(
            matches!(both, TokenError::WrongAudience | TokenError::WrongIssuer),
            "{both:?}"
        );
        let only_aud = Rules {
            issuer: None,
            ..rules
        };
        let v_aud = Verifier::from_secret(SECRET, only_aud).unwrap();
        assert_eq!(v_aud.verify(&hs256(&c)), Err(TokenError::WrongAudience));
        c.aud = Some("sse".into());
        assert_eq!(v_aud.verify(&hs256(&c)).unwrap(), c);
        assert_eq!(v.verify(&hs256(&c)), Err(TokenError::WrongIssuer));
        c.iss = Some("https://id.example".into());
        assert_eq!(v.verify(&hs256(&c)).unwrap(), c);
        c.aud = Some("other".into());
        assert_eq!(v.verify(&hs256(&c)), Err(TokenError::WrongAudience));
        c.aud = Some("sse".into());
        c.iss = Some("https://evil.example".into());
        assert_eq!(v.verify(&hs256(&c)), Err(TokenError::WrongIssuer));
        // A token for some audience, given to a server that names none (RFC 7519).
        c.iss = None;
        assert_eq!(
            verifier().verify(&hs256(&c)),
            Err(TokenError::WrongAudience)
        );
    }

    #[test]
    fn short_secrets_are_refused() {
        let err = Verifier::from_secret(&SECRET[..31], Rules::default()).unwrap_err();
        assert!(matches!(err, KeyError::SecretTooShort { len: 31 }), "{err}");
        assert!(err.to_string().contains("at least 32"), "{err}");
        assert!(Verifier::from_secret(b"", Rules::default()).is_err());
    }

    #[test]
    fn secret_files_are_read_without_their_newline_and_named_in_errors() {
        let dir = std::env::temp_dir().join(format!("sse-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("secret");
        std::fs::write(&file, [SECRET, b"\n"].concat()).unwrap();
        let v = Verifier::from_secret_file(&file, Rules::default()).unwrap();
        assert!(v.verify(&hs256(&claims(now() + 60))).is_ok());
        std::fs::write(&file, b"short\n").unwrap();
        let err = Verifier::from_secret_file(&file, Rules::default()).unwrap_err();
        assert!(
            err.to_string().starts_with(&file.display().to_string()),
            "{err}"
        );
        assert!(err.to_string().contains("5 bytes"), "{err}");
        let missing = dir.join("missing");
        let err = Verifier::from_public_key_file(&missing, Rules::default()).unwrap_err();
        assert!(
            err.to_string().contains(&missing.display().to_string()),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn debug_shows_no_key_material() {
        let text = format!("{:?}", verifier());
        assert!(text.contains("HS256"), "{text}");
        assert!(!text.contains("0123456789"), "{text}");
        assert!(!text.contains("48, 49"), "no bytes either: {text}");
    }

    /// A key pair made now: (private PKCS#8 PEM, public PEM).
    fn rcgen_pair(alg: &'static rcgen::SignatureAlgorithm) -> (String, String) {
        let pair = rcgen::KeyPair::generate_for(alg).unwrap();
        (pair.serialize_pem(), pair.public_key_pem())
    }

    /// A token of `alg` verifies with the public key, a token of the same key type by
    /// another key does not, and an HS256 token whose secret is the public key's own
    /// text (the classic algorithm confusion) is refused.
    fn check_public_key(alg: Algorithm, name: &str, private: &EncodingKey, public: &[u8]) {
        let v = Verifier::from_public_key_pem(public, Rules::default()).unwrap();
        assert_eq!(v.algorithm(), name);
        let c = claims(now() + 600);
        assert_eq!(v.verify(&encode(alg, private, &c)).unwrap(), c, "{name}");
        assert_eq!(
            v.verify(&encode(alg, private, &claims(now() - 600))),
            Err(TokenError::Expired)
        );
        let confused = encode(
            Algorithm::HS256,
            &EncodingKey::from_secret(public).unwrap(),
            &c,
        );
        assert_eq!(
            v.verify(&confused),
            Err(TokenError::WrongAlgorithm),
            "{name}"
        );
        assert_eq!(
            verifier().verify(&encode(alg, private, &c)),
            Err(TokenError::WrongAlgorithm)
        );
        assert!(
            matches!(v.sign(&c), Err(TokenError::Other(_))),
            "{name} cannot sign"
        );
    }

    #[test]
    fn ed25519_public_keys_verify_eddsa() {
        let (private, public) = rcgen_pair(&rcgen::PKCS_ED25519);
        let key = EncodingKey::from_ed_pem(private.as_bytes()).unwrap();
        check_public_key(Algorithm::EdDSA, "EdDSA", &key, public.as_bytes());
        let (other, _) = rcgen_pair(&rcgen::PKCS_ED25519);
        let other = EncodingKey::from_ed_pem(other.as_bytes()).unwrap();
        let v = Verifier::from_public_key_pem(public.as_bytes(), Rules::default()).unwrap();
        let token = encode(Algorithm::EdDSA, &other, &claims(now() + 600));
        assert_eq!(v.verify(&token), Err(TokenError::BadSignature));
    }

    #[test]
    fn p256_public_keys_verify_es256() {
        let (private, public) = rcgen_pair(&rcgen::PKCS_ECDSA_P256_SHA256);
        let key = EncodingKey::from_ec_pem(private.as_bytes()).unwrap();
        check_public_key(Algorithm::ES256, "ES256", &key, public.as_bytes());
        let (other, _) = rcgen_pair(&rcgen::PKCS_ECDSA_P256_SHA256);
        let other = EncodingKey::from_ec_pem(other.as_bytes()).unwrap();
        let v = Verifier::from_public_key_pem(public.as_bytes(), Rules::default()).unwrap();
        let token = encode(Algorithm::ES256, &other, &claims(now() + 600));
        assert_eq!(v.verify(&token), Err(TokenError::BadSignature));
    }

    #[test]
    fn rsa_public_keys_verify_rs256() {
        let key = EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap();
        check_public_key(Algorithm::RS256, "RS256", &key, RSA_PUBLIC);
        // RS512 by the same key is still another algorithm.
        let v = Verifier::from_public_key_pem(RSA_PUBLIC, Rules::default()).unwrap();
        let token = encode(Algorithm::RS512, &key, &claims(now() + 600));
        assert_eq!(v.verify(&token), Err(TokenError::WrongAlgorithm));
    }

    #[test]
    fn keys_that_are_not_public_keys_of_the_three_types_are_refused() {
        let (private, _) = rcgen_pair(&rcgen::PKCS_ED25519);
        assert!(matches!(
            Verifier::from_public_key_pem(private.as_bytes(), Rules::default()),
            Err(KeyError::PrivateKey)
        ));
        assert!(matches!(
            Verifier::from_public_key_pem(RSA_PRIVATE, Rules::default()),
            Err(KeyError::PrivateKey)
        ));
        let (_, p384) = rcgen_pair(&rcgen::PKCS_ECDSA_P384_SHA384);
        assert!(matches!(
            Verifier::from_public_key_pem(p384.as_bytes(), Rules::default()),
            Err(KeyError::NotAPublicKey)
        ));
        for junk in [
            &b""[..],
            b"hello",
            b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        ] {
            assert!(matches!(
                Verifier::from_public_key_pem(junk, Rules::default()),
                Err(KeyError::NotAPublicKey)
            ));
        }
    }

    /// `docs/architecture.md` lists `auth` as a leaf: no other module of this crate.
    #[test]
    fn auth_is_a_leaf() {
        let source = include_str!("auth.rs");
        let code = source.split("#[cfg(test)]").next().unwrap();
        for word in ["crate::", "super::", "server::"] {
            assert!(!code.contains(word), "auth.rs uses {word}");
        }
    }

    #[test]
    fn sign_makes_tokens_that_verify() {
        let v = verifier();
        let c = claims(now() + 600);
        let token = v.sign(&c).unwrap();
        assert_eq!(v.verify(&token).unwrap(), c);
        // Optional claims left out are absent from the token, not `null`.
        let json =
            jsonwebtoken::dangerous::insecure_decode_claims::<serde_json::Value>(&token).unwrap();
        assert!(json.get("nbf").is_none(), "{json}");
    }
}
