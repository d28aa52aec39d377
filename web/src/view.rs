//! Renders the state into the page's elements, found once by their `data-testid`.

use crate::state::shared_counter::{self, SharedCounter};
use crate::state::{Form, State, LOG_LIMIT};
use std::cell::Cell;
use wasm_bindgen::{JsCast, JsValue};
use web_sys::{Document, Element, HtmlInputElement};

pub struct View {
    doc: Document,
    counter: Element,
    state: Element,
    reconnects: Element,
    events: Element,
    last_id: Element,
    error: Element,
    log: Element,
    detail: Element,
    count: HtmlInputElement,
    interval: HtmlInputElement,
    drop_after: HtmlInputElement,
    close_on_error: HtmlInputElement,
    shared: SharedView,
    /// The `seq` of the newest log line on the page: each render adds only newer lines,
    /// rather than rebuilding the whole log for every tick.
    log_shown: Cell<u64>,
}

fn by_testid(doc: &Document, id: &str) -> Result<Element, JsValue> {
    doc.query_selector(&format!("[data-testid=\"{id}\"]"))?
        .ok_or_else(|| JsValue::from_str(&format!("no element with data-testid={id}")))
}

fn input(doc: &Document, id: &str) -> Result<HtmlInputElement, JsValue> {
    by_testid(doc, id)?
        .dyn_into::<HtmlInputElement>()
        .map_err(|_| JsValue::from_str(&format!("{id} is not an input")))
}

impl View {
    pub fn new(doc: Document) -> Result<View, JsValue> {
        Ok(View {
            counter: by_testid(&doc, "counter")?,
            state: by_testid(&doc, "state")?,
            reconnects: by_testid(&doc, "reconnects")?,
            events: by_testid(&doc, "events-received")?,
            last_id: by_testid(&doc, "last-event-id")?,
            error: by_testid(&doc, "error")?,
            log: by_testid(&doc, "log")?,
            detail: by_testid(&doc, "state-detail")?,
            count: input(&doc, "count")?,
            interval: input(&doc, "interval")?,
            drop_after: input(&doc, "drop-after")?,
            close_on_error: input(&doc, "close-on-error")?,
            shared: SharedView::new(&doc)?,
            log_shown: Cell::new(0),
            doc,
        })
    }

    /// The form as the person filled it.
    pub fn form(&self) -> Form {
        Form {
            count: self.count.value(),
            interval_ms: self.interval.value(),
            drop_after: self.drop_after.value(),
            close_on_error: self.close_on_error.checked(),
        }
    }

    /// Fills the form from the page's query (see [`Form::apply_query`]) and returns
    /// whether it asks to connect at once.
    pub fn prefill(&self, query: &str) -> bool {
        let mut form = self.form();
        let autoconnect = form.apply_query(query);
        self.count.set_value(&form.count);
        self.interval.set_value(&form.interval_ms);
        self.drop_after.set_value(&form.drop_after);
        self.close_on_error.set_checked(form.close_on_error);
        autoconnect
    }

    pub fn render(&self, s: &State) {
        match s.counter {
            Some(n) => {
                set_text(&self.counter, &n.to_string());
                let _ = self.counter.remove_attribute("data-empty");
            }
            None => {
                set_text(&self.counter, "–");
                let _ = self.counter.set_attribute("data-empty", "");
            }
        }
        set_text(&self.state, s.conn.as_str());
        let _ = self.state.set_attribute("data-state", s.conn.as_str());
        set_text(&self.reconnects, &s.reconnects.to_string());
        set_text(&self.events, &s.events.to_string());
        set_text(
            &self.last_id,
            if s.last_event_id.is_empty() {
                "–"
            } else {
                &s.last_event_id
            },
        );
        set_text(&self.detail, &detail(s));
        set_message(&self.error, s.error.as_deref());
        self.shared.render(&s.shared);
        self.render_log(s);
    }

    /// Adds the log lines not shown yet at the top (newest first) and drops the oldest
    /// past [`LOG_LIMIT`], as the state does.
    fn render_log(&self, s: &State) {
        let shown = self.log_shown.get();
        for entry in s.log.iter().filter(|e| e.seq > shown) {
            let Ok(row) = self.doc.create_element("li") else {
                return;
            };
            let _ = row.set_attribute("class", &format!("kind-{}", entry.kind.as_str()));
            for (class, text) in [
                ("at", format!("{:.3}s", entry.at_ms as f64 / 1000.0)),
                ("stream", entry.stream.as_str().to_owned()),
                ("kind", entry.kind.as_str().to_owned()),
                ("id", entry.id.clone()),
                ("data", entry.data.clone()),
            ] {
                if let Ok(cell) = self.doc.create_element("span") {
                    let _ = cell.set_attribute("class", class);
                    cell.set_text_content(Some(&text));
                    let _ = row.append_child(&cell);
                }
            }
            let _ = self.log.prepend_with_node_1(&row);
            self.log_shown.set(entry.seq);
        }
        while self.log.child_element_count() as usize > LOG_LIMIT {
            match self.log.last_element_child() {
                Some(old) => old.remove(),
                None => break,
            }
        }
    }
}

/// One sentence on what the state means.
fn detail(s: &State) -> String {
    use crate::state::Conn;
    match s.conn {
        Conn::Idle => "Not connected yet.".into(),
        Conn::Connecting => "Opening the EventSource…".into(),
        Conn::Open => "Receiving ticks.".into(),
        Conn::Reconnecting => {
            "The connection failed; the browser is reconnecting by itself with Last-Event-ID."
                .into()
        }
        Conn::Finished => match s.end_reason {
            Some(reason) => format!(
                "The server sent its end event (reason: {reason}); the page closed the EventSource."
            ),
            None => "The server sent its end event; the page closed the EventSource.".into(),
        },
        Conn::ClosedOnError if s.browser_gave_up => {
            "The browser gave up by itself (an HTTP error or a 204 answer): no reconnect.".into()
        }
        Conn::ClosedOnError => {
            "The connection failed and the page closed the EventSource: no reconnect.".into()
        }
        Conn::ClosedByUser => "You closed the EventSource; the server stopped the stream.".into(),
    }
}

/// The shared counter panel's elements.
struct SharedView {
    value: Element,
    state: Element,
    /// The seconds left before the page reconnects by itself, next to the badge.
    retry_in: Element,
    detail: Element,
    error: Element,
    increment_error: Element,
    last_id: Element,
    heartbeats: Element,
    reconnects: Element,
    join: Element,
    leave: Element,
}

impl SharedView {
    fn new(doc: &Document) -> Result<SharedView, JsValue> {
        Ok(SharedView {
            value: by_testid(doc, "shared-value")?,
            state: by_testid(doc, "shared-state")?,
            retry_in: by_testid(doc, "shared-retry-in")?,
            detail: by_testid(doc, "shared-detail")?,
            error: by_testid(doc, "shared-error")?,
            increment_error: by_testid(doc, "shared-increment-error")?,
            last_id: by_testid(doc, "shared-last-event-id")?,
            heartbeats: by_testid(doc, "shared-heartbeats")?,
            reconnects: by_testid(doc, "shared-reconnects")?,
            join: by_testid(doc, "shared-join")?,
            leave: by_testid(doc, "shared-leave")?,
        })
    }

    fn render(&self, s: &SharedCounter) {
        match s.value {
            Some(n) => {
                set_text(&self.value, &n.to_string());
                let _ = self.value.remove_attribute("data-empty");
            }
            None => {
                set_text(&self.value, "–");
                let _ = self.value.set_attribute("data-empty", "");
            }
        }
        set_text(&self.state, s.conn.as_str());
        let _ = self.state.set_attribute("data-state", s.conn.as_str());
        set_text(&self.detail, &shared_detail(s));
        set_message(&self.error, s.error.as_deref());
        set_message(&self.increment_error, s.increment_error.as_deref());
        let last_id = s
            .last_id
            .map_or_else(|| "–".to_owned(), |id| id.to_string());
        set_text(&self.last_id, &last_id);
        set_text(&self.heartbeats, &s.heartbeats.to_string());
        set_text(&self.reconnects, &s.reconnects.to_string());
        set_disabled(&self.join, s.conn.is_joined());
        set_disabled(&self.leave, !s.conn.is_joined());
        let retry_in = s.seconds_left().map(|n| format!("in {n} s"));
        set_message(&self.retry_in, retry_in.as_deref());
    }
}

/// One sentence on what the panel's state means.
fn shared_detail(s: &SharedCounter) -> String {
    use shared_counter::{Cause, Conn, Retry};
    let after = s
        .last_id
        .map_or_else(String::new, |id| format!(" after id {id}"));
    match s.conn {
        Conn::Idle => "Not joined: the page holds no connection for it.".into(),
        Conn::Connecting => "Opening the shared stream…".into(),
        Conn::Open => "Live: every page that joined sees each +1.".into(),
        Conn::Reconnecting(Retry::Browser) => {
            "The stream ended or failed; the browser reconnects by itself after the server's \
             retry, with Last-Event-ID."
                .into()
        }
        Conn::Reconnecting(Retry::Asking) => {
            "The browser gave up on the stream; asking the server why…".into()
        }
        Conn::Reconnecting(Retry::Waiting { cause, .. }) => {
            let left = s.seconds_left().unwrap_or(0);
            match cause {
                Cause::Refused => format!(
                    "The page reconnects{after} in {left} s; the wait doubles while \
                     refusals repeat, up to a minute."
                ),
            }
        }
        Conn::Reconnecting(Retry::Opening) => format!("Reconnecting{after}…"),
        Conn::Closed if s.error.is_some() => "The stream was refused: Join to try again.".into(),
        Conn::Closed => "You left: the page holds no connection for it.".into(),
    }
}

/// Shows a message in its element, or hides the element when there is none.
fn set_message(el: &Element, message: Option<&str>) {
    set_text(el, message.unwrap_or(""));
    let _ = match message {
        Some(_) => el.remove_attribute("hidden"),
        None => el.set_attribute("hidden", ""),
    };
}

fn set_disabled(el: &Element, disabled: bool) {
    let _ = if disabled {
        el.set_attribute("disabled", "")
    } else {
        el.remove_attribute("disabled")
    };
}

fn set_text(el: &Element, text: &str) {
    if el.text_content().as_deref() != Some(text) {
        el.set_text_content(Some(text));
    }
}
