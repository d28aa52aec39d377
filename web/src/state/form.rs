//! The stream settings form, as typed, and the page's query string that fills it.

use shared::{params, CounterParams, ParamError};

/// What the form holds, as typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Form {
    pub count: String,
    pub interval_ms: String,
    /// Empty means no simulated drop.
    pub drop_after: String,
    pub close_on_error: bool,
}

impl Form {
    /// The stream's parameters, validated by the server's own parser, so the page refuses
    /// exactly what the server would refuse, with the same message.
    pub fn params(&self) -> Result<CounterParams, ParamError> {
        let mut pairs = vec![
            (params::COUNT, self.count.trim()),
            (params::INTERVAL_MS, self.interval_ms.trim()),
        ];
        // An empty field means no drop, not an empty (and so invalid) parameter.
        match self.drop_after.trim() {
            "" => {}
            v => pairs.push((params::DROP_AFTER, v)),
        }
        CounterParams::from_pairs(pairs)
    }

    /// Applies the page's own query string (`location.search`) to the form, so that a
    /// link opens with its settings: `count`, `interval_ms` (or `interval`, the input's
    /// name), `drop_after`, `close_on_error=0|1`. Returns whether it also asks to connect
    /// at once (`autoconnect=1`), which is what demos and headless screenshots use, since
    /// they cannot click: `/?count=3&interval_ms=200&autoconnect=1`.
    ///
    /// Values are taken as they are; Connect validates them like typed input. Other keys
    /// (the shared panel's) are left to their own reader.
    pub fn apply_query(&mut self, query: &str) -> bool {
        let mut autoconnect = false;
        for (k, v) in query_pairs(query) {
            match k {
                "count" => self.count = v.to_owned(),
                "interval_ms" | "interval" => self.interval_ms = v.to_owned(),
                "drop_after" => self.drop_after = v.to_owned(),
                "close_on_error" => self.close_on_error = is_on(v),
                "autoconnect" => autoconnect = is_on(v),
                _ => {}
            }
        }
        autoconnect
    }
}

/// The `key=value` pairs of a query string, with or without its leading `?`; a key
/// without `=` has an empty value.
pub fn query_pairs(query: &str) -> impl Iterator<Item = (&str, &str)> {
    query
        .trim_start_matches('?')
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
}

/// A query flag: present means on, unless it says `0`, `false` or `off`.
pub fn is_on(value: &str) -> bool {
    !matches!(value, "0" | "false" | "off")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(count: &str, drop_after: &str, close_on_error: bool) -> Form {
        Form {
            count: count.into(),
            interval_ms: "100".into(),
            drop_after: drop_after.into(),
            close_on_error,
        }
    }

    #[test]
    fn the_form_reads_as_the_server_would() {
        let p = form(" 3 ", "", true).params().unwrap();
        assert_eq!(
            (p.count, p.interval_ms, p.drop_after, p.last_event_id),
            (3, 100, None, None)
        );
        assert_eq!(form("3", "2", true).params().unwrap().drop_after, Some(2));
        for (bad, param) in [
            (form("0", "", true), "count"),
            (form("abc", "", true), "count"),
            (form("3", "-1", true), "drop_after"),
        ] {
            let err = bad.params().unwrap_err();
            assert_eq!(err.param(), param);
            assert!(err.to_string().starts_with(param), "{err}");
        }
        let mut f = form("3", "", true);
        f.interval_ms = "3600001".into();
        assert!(f.params().unwrap_err().to_string().contains("interval_ms"));
    }

    #[test]
    fn the_query_fills_the_form_and_may_ask_to_connect() {
        let mut f = form("10", "", true);
        assert!(!f.apply_query(""));
        assert_eq!(f, form("10", "", true));
        let auto = f.apply_query("?count=3&interval=200&drop_after=2&close_on_error=0&x=1");
        assert!(!auto);
        assert_eq!(
            (
                f.count.as_str(),
                f.interval_ms.as_str(),
                f.drop_after.as_str()
            ),
            ("3", "200", "2")
        );
        assert!(!f.close_on_error);
        assert!(f.apply_query("?interval_ms=50&close_on_error=1&autoconnect=1"));
        assert_eq!((f.interval_ms.as_str(), f.close_on_error), ("50", true));
        assert!(f.apply_query("?autoconnect"));
        assert!(!f.apply_query("?autoconnect=0"));
    }
}
