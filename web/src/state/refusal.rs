//! Why a stream was refused. An EventSource reports only "error", never the status or
//! the body, so the page asks the server the same request with `fetch`, once per
//! connection, and reads the answer here.

use shared::{params, ErrorBody, UnavailableReason};

/// An answer from the server, as `fetch` saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    /// The `Retry-After` header, as sent.
    pub retry_after: Option<String>,
    /// The body; empty for a stream that answered `2xx`, which the page does not read.
    pub body: String,
}

impl Answer {
    /// `Retry-After` in seconds. The server sends whole seconds; the other form the
    /// standard allows, an HTTP date, is not read (`None`), as is anything else.
    pub fn retry_after_s(&self) -> Option<u64> {
        let v = self.retry_after.as_deref()?.trim();
        if v.is_empty() || v.len() > 10 || !v.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        v.parse().ok()
    }
}

/// What an answer means for a stream that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No answer at all: the server is down or unreachable.
    Unreachable,
    /// `204 No Content`: a resume past the end, which stops a browser for good.
    NoContent,
    /// Another `2xx`: the stream opens fine now, so whatever it was has passed.
    Passed,
    /// An error status, with the server's JSON body when it sent one.
    Status {
        status: u16,
        body: Option<ErrorBody>,
        /// When the server suggests trying again, in seconds (`Retry-After`).
        retry_after_s: Option<u64>,
    },
}

impl Refusal {
    /// Reads `fetch`'s answer, `None` when it got none.
    pub fn from_answer(answer: Option<&Answer>) -> Refusal {
        match answer {
            None => Refusal::Unreachable,
            Some(a) if a.status == 204 => Refusal::NoContent,
            Some(a) if (200..300).contains(&a.status) => Refusal::Passed,
            Some(a) => Refusal::Status {
                status: a.status,
                body: serde_json::from_str(&a.body).ok(),
                retry_after_s: a.retry_after_s(),
            },
        }
    }

    /// What an error status says, after "refused": `(HTTP 503, capacity): too many open
    /// streams`. Empty for the other cases, which each have their own sentence.
    pub fn status_text(&self) -> String {
        let Refusal::Status { status, body, .. } = self else {
            return String::new();
        };
        let reason = body
            .as_ref()
            .and_then(|b| b.reason)
            .map(|r| format!(", {}", unavailable_text(r)))
            .unwrap_or_default();
        let error = body
            .as_ref()
            .map(|b| format!(": {}", b.error))
            .unwrap_or_default();
        format!("(HTTP {status}{reason}){error}")
    }

    /// The per-client counter's sentence for the person, or `None` when there is
    /// nothing to say. `last_event_id` is the id the refused request resumed after.
    pub fn counter_message(&self, last_event_id: &str) -> Option<String> {
        let message = match self {
            Refusal::Unreachable => {
                "Cannot reach the server: is it running? (`cargo run -p server`)".to_owned()
            }
            Refusal::NoContent => format!(
                "The server answered 204 No Content to the resume after id {last_event_id}: \
                 the stream has nothing left, and a 204 stops the browser for good"
            ),
            Refusal::Passed => return None,
            Refusal::Status {
                status,
                body: Some(e),
                ..
            } if e.param.as_deref() == Some(params::DROP_AFTER) => format!(
                "This server does not allow fault injection, so it refused drop_after \
                 (HTTP {status}). Start it with --allow-fault-injection to simulate a \
                 network drop"
            ),
            Refusal::Status {
                status,
                body: Some(e),
                ..
            } => format!("The server refused the stream (HTTP {status}): {}", e.error),
            Refusal::Status {
                status, body: None, ..
            } => {
                format!("The server refused the stream (HTTP {status})")
            }
        };
        Some(message + &self.retry_after_text())
    }

    /// `. The server suggests trying again in N s` when it sent `Retry-After`.
    pub fn retry_after_text(&self) -> String {
        match self {
            Refusal::Status {
                retry_after_s: Some(s),
                ..
            } => format!(". The server suggests trying again in {s} s"),
            _ => String::new(),
        }
    }
}

/// The words for a `503`'s reason.
pub fn unavailable_text(reason: UnavailableReason) -> &'static str {
    match reason {
        UnavailableReason::Capacity => "capacity",
        UnavailableReason::StoreUnavailable => "store unavailable",
        UnavailableReason::ShuttingDown => "shutting down",
    }
}

/// When to ask the server why, for the current connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inquiry {
    /// Counts connections, so a late answer about an earlier one is not shown against the
    /// current one.
    serial: u64,
    /// Whether the current source has ever been open (an error before that is a refusal).
    was_open: bool,
    /// Asked once per connection: a browser retrying a dead server every `retry` delay
    /// should not make the page fetch as often.
    asked: bool,
}

impl Inquiry {
    /// A new connection begins.
    pub fn start(&mut self) {
        self.serial += 1;
        self.was_open = false;
        self.asked = false;
    }

    /// The current connection opened.
    pub fn opened(&mut self) {
        self.was_open = true;
    }

    /// After an error: the serial to ask under, when the page should ask now. An error
    /// before the stream ever opened, or one the browser gave up on (`closed`), is a
    /// refusal (bad parameters, fault injection off, too many streams, server down).
    /// The browser gives up once per source, so that one is always asked about, even
    /// after retries were: its answer may differ, and what the page does next needs it.
    pub fn ask(&mut self, closed: bool) -> Option<u64> {
        if !closed && (self.was_open || self.asked) {
            return None;
        }
        self.asked = true;
        Some(self.serial)
    }

    /// Whether an answer asked under `serial` is about the current connection.
    pub fn is_current(&self, serial: u64) -> bool {
        serial == self.serial
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> Option<Answer> {
        Some(Answer {
            status,
            retry_after: None,
            body: body.to_owned(),
        })
    }

    #[test]
    fn answers_are_read_by_status() {
        assert_eq!(Refusal::from_answer(None), Refusal::Unreachable);
        assert_eq!(
            Refusal::from_answer(answer(204, "").as_ref()),
            Refusal::NoContent
        );
        assert_eq!(
            Refusal::from_answer(answer(200, "").as_ref()),
            Refusal::Passed
        );
        assert_eq!(
            Refusal::from_answer(answer(502, "<html>").as_ref()),
            Refusal::Status {
                status: 502,
                body: None,
                retry_after_s: None,
            }
        );
        let r =
            Refusal::from_answer(answer(503, r#"{"error":"busy","reason":"capacity"}"#).as_ref());
        assert_eq!(
            r.status_text(),
            "(HTTP 503, capacity): busy",
            "the status, the 503's reason and the server's words"
        );
        let Refusal::Status {
            status: 503,
            body: Some(body),
            ..
        } = r
        else {
            panic!("{r:?}")
        };
        assert_eq!(body.reason, Some(UnavailableReason::Capacity));
    }

    #[test]
    fn retry_after_is_read_in_whole_seconds_only() {
        let with = |v: &str| Answer {
            status: 503,
            retry_after: Some(v.to_owned()),
            body: String::new(),
        };
        assert_eq!(with("1").retry_after_s(), Some(1));
        assert_eq!(with(" 30 ").retry_after_s(), Some(30));
        for bad in [
            "",
            "-1",
            "1.5",
            "Wed, 21 Oct 2015 07:28:00 GMT",
            "99999999999",
        ] {
            assert_eq!(with(bad).retry_after_s(), None, "{bad:?}");
        }
        let r = Refusal::from_answer(Some(&with("7")));
        assert!(matches!(
            r,
            Refusal::Status {
                retry_after_s: Some(7),
                ..
            }
        ));
    }

    #[test]
    fn asks_once_per_connection_and_only_about_refusals() {
        let mut q = Inquiry::default();
        q.start();
        assert_eq!(q.ask(false), Some(1), "an error before opening");
        assert_eq!(
            q.ask(false),
            None,
            "the browser retrying is asked about once"
        );
        assert_eq!(q.ask(true), Some(1), "then it gave up: ask again");
        q.start();
        q.opened();
        assert_eq!(q.ask(false), None, "a drop after opening is no refusal");
        assert_eq!(q.ask(true), Some(2), "the browser gave up");
        assert!(q.is_current(2) && !q.is_current(1));
    }
}
