//! The event log: what happened on the page's streams, newest last, bounded.

use std::collections::VecDeque;

/// The log keeps this many entries; older ones scroll away.
pub const LOG_LIMIT: usize = 200;

/// Which stream a log line is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// The per-client counter (the form and Connect).
    Counter,
    /// The shared counter panel.
    Shared,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Counter => "counter",
            Stream::Shared => "shared",
        }
    }
}

/// What a log line is about. Its text is also the line's CSS class (`kind-...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogKind {
    /// The page opened a new EventSource.
    Connect,
    /// The EventSource's `open` event.
    Open,
    /// A tick.
    Message,
    /// Data the page could not read.
    Malformed,
    /// The server's `end` event.
    End,
    /// The EventSource's `error` event.
    Error,
    /// The server's reason for refusing a stream, once the page has asked.
    Refused,
    /// The person closed the stream (Close, or Leave on the shared panel).
    Close,
    /// The shared stream could not continue from the page's last id: the value is
    /// replaced.
    Reset,
    /// The answer to a `+1`.
    Increment,
    /// The page will reconnect the shared stream by itself, after a wait.
    Retry,
    /// The shared stream was silent for longer than the heartbeats allow.
    Missed,
}

impl LogKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LogKind::Connect => "connect",
            LogKind::Open => "open",
            LogKind::Message => "message",
            LogKind::Malformed => "malformed",
            LogKind::End => "end",
            LogKind::Error => "error",
            LogKind::Refused => "refused",
            LogKind::Close => "close",
            LogKind::Reset => "reset",
            LogKind::Increment => "increment",
            LogKind::Retry => "retry",
            LogKind::Missed => "missed",
        }
    }
}

/// One line of the event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// 1, 2, ... over the page's life, so the view can add only the new lines.
    pub seq: u64,
    /// Milliseconds since the page loaded.
    pub at_ms: u64,
    pub stream: Stream,
    pub kind: LogKind,
    pub id: String,
    pub data: String,
}

/// The last [`LOG_LIMIT`] entries, numbered over the page's life.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Log {
    entries: VecDeque<LogEntry>,
    /// The `seq` of the last entry.
    seq: u64,
}

impl Log {
    pub fn push(&mut self, at_ms: u64, stream: Stream, kind: LogKind, id: &str, data: &str) {
        if self.entries.len() == LOG_LIMIT {
            self.entries.pop_front();
        }
        self.seq += 1;
        self.entries.push_back(LogEntry {
            seq: self.seq,
            at_ms,
            stream,
            kind,
            id: id.to_owned(),
            data: data.to_owned(),
        });
    }

    /// The entries, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &LogEntry> {
        self.entries.iter()
    }
}

/// What the tests look at; the page reads the log through [`Log::iter`] only.
#[cfg(test)]
impl Log {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The newest entry.
    pub fn last(&self) -> Option<&LogEntry> {
        self.entries.back()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_entries_and_numbers_them_all() {
        let mut log = Log::default();
        for n in 1..=(LOG_LIMIT as u64 + 5) {
            log.push(n, Stream::Counter, LogKind::Message, &n.to_string(), "");
        }
        assert_eq!(log.len(), LOG_LIMIT);
        assert_eq!(log.iter().next().map(|e| e.seq), Some(6));
        let last = log.last().unwrap();
        assert_eq!(last.seq, LOG_LIMIT as u64 + 5);
        assert_eq!(last.id, (LOG_LIMIT + 5).to_string());
    }

    #[test]
    fn kinds_have_distinct_names() {
        let kinds = [
            LogKind::Connect,
            LogKind::Open,
            LogKind::Message,
            LogKind::Malformed,
            LogKind::End,
            LogKind::Error,
            LogKind::Refused,
            LogKind::Close,
            LogKind::Reset,
            LogKind::Increment,
            LogKind::Retry,
            LogKind::Missed,
        ];
        let mut names: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), kinds.len());
    }
}
