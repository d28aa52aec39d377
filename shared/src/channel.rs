//! Channel names and the patterns that grant them: what a channel may be called, and
//! which channels a grant such as `rooms/*` covers.
//!
//! A name is 1..=[`MAX_CHANNEL_BYTES`] bytes: one or more segments of
//! `[A-Za-z0-9_.~-]` joined by `/`, with no empty segment (so no leading, trailing or
//! doubled `/`).
//!
//! A [`Pattern`] is either an exact channel name, or a prefix followed by a single `*`
//! at the very end, which stands for zero or more characters of any kind: `rooms/*`
//! matches `rooms/a` and `rooms/a/b` (not `rooms`), `rooms*` matches `rooms`, `rooms2`
//! and `rooms/a`, and `*` matches every channel. The prefix must be the start of some
//! valid name (allowed characters and `/`, no leading or doubled `/`, short enough), so
//! a pattern that could match nothing, such as `/x*` or `a//*`, is refused rather than
//! granting nothing in silence. `*` anywhere but at the end is refused too.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// The channel of the shared counter; only the server publishes on it.
pub const COUNTER_CHANNEL: &str = "counter";

/// The longest channel name, in bytes.
pub const MAX_CHANNEL_BYTES: usize = 128;

/// The character of a pattern that stands for any rest of a name.
pub const WILDCARD: char = '*';

/// Whether `b` may appear in a segment of a channel name.
fn segment_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'~' | b'-')
}

/// Why a channel name or a pattern is refused. The messages do not repeat the value:
/// the caller names it where it belongs (an error body's `value`, a flag's message).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    #[error("a channel name must be 1 to 128 bytes long")]
    Length,
    #[error("a channel name may contain only A-Z, a-z, 0-9, `_`, `.`, `~`, `-` and `/` between segments")]
    Character,
    #[error("a channel name may not start or end with `/` or contain `//`")]
    EmptySegment,
    #[error(
        "a pattern is a channel name, or the start of one followed by a single `*` at the end"
    )]
    Pattern,
}

/// Checks `name` against the grammar of the module's documentation.
pub fn check_channel(name: &str) -> Result<(), ChannelError> {
    if name.is_empty() || name.len() > MAX_CHANNEL_BYTES {
        return Err(ChannelError::Length);
    }
    check_prefix(name)?;
    if name.ends_with('/') {
        return Err(ChannelError::EmptySegment);
    }
    Ok(())
}

/// Whether `name` is a valid channel name.
pub fn valid_channel(name: &str) -> bool {
    check_channel(name).is_ok()
}

/// Checks that `prefix` is the start of some valid name: empty, or allowed characters
/// and `/` with no leading or doubled `/`, leaving room for at least one more byte when
/// it ends in `/`.
fn check_prefix(prefix: &str) -> Result<(), ChannelError> {
    let bytes = prefix.as_bytes();
    if let Some(bad) = bytes.iter().find(|&&b| !segment_byte(b) && b != b'/') {
        return Err(if *bad == WILDCARD as u8 {
            ChannelError::Pattern
        } else {
            ChannelError::Character
        });
    }
    if bytes.first() == Some(&b'/') || prefix.contains("//") {
        return Err(ChannelError::EmptySegment);
    }
    let room = if bytes.last() == Some(&b'/') { 1 } else { 0 };
    if prefix.len() + room > MAX_CHANNEL_BYTES {
        return Err(ChannelError::Length);
    }
    Ok(())
}

/// A valid channel name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChannelName(String);

impl ChannelName {
    pub fn new(name: impl Into<String>) -> Result<ChannelName, ChannelError> {
        let name = name.into();
        check_channel(&name)?;
        Ok(ChannelName(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }

    /// Whether this is [`COUNTER_CHANNEL`].
    pub fn is_counter(&self) -> bool {
        self.0 == COUNTER_CHANNEL
    }
}

impl FromStr for ChannelName {
    type Err = ChannelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ChannelName::new(s)
    }
}

impl fmt::Display for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for ChannelName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Lets a map keyed by names be looked up with a `&str` (the derived `Eq`, `Ord` and
/// `Hash` are the inner string's, as `Borrow` requires).
impl std::borrow::Borrow<str> for ChannelName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl Serialize for ChannelName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ChannelName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ChannelName::new(s).map_err(serde::de::Error::custom)
    }
}

/// Which channels a grant covers: an exact name, or a prefix ending in `*` (see the
/// module's documentation).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Pattern {
    /// The pattern as written, `*` included.
    text: String,
    /// Whether it ends in `*`, so that the part before it is a prefix.
    wildcard: bool,
}

impl Pattern {
    pub fn new(pattern: impl Into<String>) -> Result<Pattern, ChannelError> {
        let text = pattern.into();
        let wildcard = match text.strip_suffix(WILDCARD) {
            Some(prefix) => {
                check_prefix(prefix)?;
                true
            }
            None => {
                check_channel(&text)?;
                false
            }
        };
        Ok(Pattern { text, wildcard })
    }

    /// The pattern that matches every channel.
    pub fn any() -> Pattern {
        Pattern {
            text: WILDCARD.to_string(),
            wildcard: true,
        }
    }

    /// Whether `channel` is covered. The channel is not checked: callers validate
    /// names first (`*` also matches a string that is no channel name).
    pub fn matches(&self, channel: &str) -> bool {
        if self.wildcard {
            channel.starts_with(&self.text[..self.text.len() - 1])
        } else {
            channel == self.text
        }
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl FromStr for Pattern {
    type Err = ChannelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Pattern::new(s)
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl From<ChannelName> for Pattern {
    fn from(name: ChannelName) -> Pattern {
        Pattern {
            text: name.0,
            wildcard: false,
        }
    }
}

impl Serialize for Pattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Pattern::new(s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_follow_the_contract() {
        let longest = "a".repeat(MAX_CHANNEL_BYTES);
        for good in [
            "counter",
            "a",
            "rooms/lobby",
            "users/ada_l",
            "A-Z.0~9_/x",
            "a/b/c/d",
            "...",
            longest.as_str(),
        ] {
            assert_eq!(check_channel(good), Ok(()), "{good:?}");
            assert!(valid_channel(good));
        }
        let too_long = "a".repeat(MAX_CHANNEL_BYTES + 1);
        for (bad, why) in [
            ("", ChannelError::Length),
            (too_long.as_str(), ChannelError::Length),
            ("/a", ChannelError::EmptySegment),
            ("a/", ChannelError::EmptySegment),
            ("/", ChannelError::EmptySegment),
            ("a//b", ChannelError::EmptySegment),
            ("a b", ChannelError::Character),
            ("a?b", ChannelError::Character),
            ("é", ChannelError::Character),
            ("a\nb", ChannelError::Character),
            ("a%2Fb", ChannelError::Character),
            ("rooms/*", ChannelError::Pattern),
        ] {
            assert_eq!(check_channel(bad), Err(why), "{bad:?}");
            assert!(!valid_channel(bad));
            assert!(ChannelName::new(bad).is_err());
        }
        assert!(ChannelName::new(COUNTER_CHANNEL).unwrap().is_counter());
    }

    #[test]
    fn channel_name_json_is_a_checked_string() {
        let name: ChannelName = serde_json::from_str(r#""rooms/a""#).unwrap();
        assert_eq!(name.as_str(), "rooms/a");
        assert_eq!(serde_json::to_string(&name).unwrap(), r#""rooms/a""#);
        let err = serde_json::from_str::<ChannelName>(r#""a//b""#).unwrap_err();
        assert!(err.to_string().contains("`//`"), "{err}");
        assert!(serde_json::from_str::<ChannelName>("7").is_err());
    }

    #[test]
    fn patterns_match_exactly_or_by_prefix() {
        let p = |s: &str| Pattern::new(s).unwrap();
        assert!(p("rooms/*").matches("rooms/a"));
        assert!(p("rooms/*").matches("rooms/a/b"));
        assert!(!p("rooms/*").matches("rooms"));
        assert!(!p("rooms/*").matches("roomsx/a"));
        assert!(p("rooms*").matches("rooms"));
        assert!(p("rooms*").matches("rooms2"));
        assert!(p("rooms/a*").matches("rooms/ab"));
        assert!(p("*").matches("counter"));
        assert!(p("*").matches("x/y"));
        assert!(p("rooms/a").matches("rooms/a"));
        assert!(!p("rooms/a").matches("rooms/a/b"));
        assert!(!p("rooms/a").matches("rooms/ab"));
        assert_eq!(Pattern::any(), p("*"));
    }

    #[test]
    fn patterns_that_could_match_nothing_are_refused() {
        for (bad, why) in [
            ("", ChannelError::Length),
            ("**", ChannelError::Pattern),
            ("a*b", ChannelError::Pattern),
            ("*/a", ChannelError::Pattern),
            ("rooms/*/x", ChannelError::Pattern),
            ("/*", ChannelError::EmptySegment),
            ("/a*", ChannelError::EmptySegment),
            ("a//*", ChannelError::EmptySegment),
            ("a/", ChannelError::EmptySegment),
            ("a b*", ChannelError::Character),
        ] {
            assert_eq!(Pattern::new(bad), Err(why), "{bad:?}");
        }
        // The longest prefix still matches a name of the longest length.
        let prefix = "a".repeat(MAX_CHANNEL_BYTES);
        assert!(Pattern::new(format!("{prefix}*")).unwrap().matches(&prefix));
        assert_eq!(
            Pattern::new(format!("{}/*", "a".repeat(MAX_CHANNEL_BYTES - 1))),
            Err(ChannelError::Length)
        );
        assert!(Pattern::new(format!("{}/*", "a".repeat(MAX_CHANNEL_BYTES - 2))).is_ok());
    }

    #[test]
    fn pattern_json_is_a_checked_string() {
        let grants: Vec<Pattern> = serde_json::from_str(r#"["rooms/*","users/ada","*"]"#).unwrap();
        assert_eq!(
            grants.iter().map(Pattern::as_str).collect::<Vec<_>>(),
            ["rooms/*", "users/ada", "*"]
        );
        assert_eq!(
            serde_json::to_string(&grants).unwrap(),
            r#"["rooms/*","users/ada","*"]"#
        );
        let err = serde_json::from_str::<Pattern>(r#""a*b""#).unwrap_err();
        assert!(err.to_string().contains("single `*`"), "{err}");
    }

    /// Any string of the characters that matter, valid or not; half of them of letters
    /// and `/` only, where slashes in the wrong place are the only fault.
    fn candidate() -> impl Strategy<Value = String> {
        prop_oneof!["[ab/]{0,10}", "[a-c/*._~ -]{0,12}"]
    }

    proptest! {
        #[test]
        fn a_valid_name_is_its_own_pattern_and_nothing_else(name in "[a-zA-Z0-9_.~-]{1,8}(/[a-zA-Z0-9_.~-]{1,8}){0,4}") {
            prop_assert!(valid_channel(&name));
            let p = Pattern::new(name.clone()).unwrap();
            prop_assert!(p.matches(&name));
            let longer = format!("{name}x");
            prop_assert!(!p.matches(&longer));
            prop_assert!(Pattern::any().matches(&name));
        }

        #[test]
        fn the_checker_agrees_with_the_grammar(s in candidate()) {
            let by_grammar = !s.is_empty()
                && s.len() <= MAX_CHANNEL_BYTES
                && s.split('/').all(|seg| !seg.is_empty() && seg.bytes().all(segment_byte));
            prop_assert_eq!(valid_channel(&s), by_grammar);
            prop_assert_eq!(ChannelName::new(s.clone()).is_ok(), by_grammar);
        }

        /// A wildcard pattern is accepted exactly when some valid name starts with its
        /// prefix, and it matches every valid name that does.
        #[test]
        fn a_prefix_pattern_matches_what_starts_with_it(prefix in candidate(), rest in "[a-c]{1,3}(/[a-c]{1,3}){0,2}") {
            let accepted = Pattern::new(format!("{prefix}*"));
            let witness = format!("{prefix}{rest}");
            prop_assert_eq!(accepted.is_ok(), valid_channel(&witness), "{:?}", prefix);
            if let Ok(p) = accepted {
                prop_assert!(p.matches(&witness));
                let round: Pattern = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
                prop_assert_eq!(round, p);
            }
        }
    }
}
