//! Renders the state into the page's elements, found once by their `data-testid`.

use crate::state::chat::{Chat, MESSAGES_KEPT};
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
    chat: ChatView,
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
            chat: ChatView::new(&doc)?,
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
        self.shared.render(&s.shared, s.shared_role());
        self.chat.render(&self.doc, &s.chat, s.chat_role());
        self.render_log(s);
    }

    /// The value of one of the chat's inputs, by `data-testid`.
    pub fn chat_input(&self, testid: &str) -> String {
        let input = match testid {
            "chat-name" => &self.chat.name,
            "chat-room" => &self.chat.room,
            "chat-to" => &self.chat.to,
            _ => &self.chat.input,
        };
        input.value()
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
            let at = format!("{:.3}s", entry.at_ms as f64 / 1000.0);
            append_cells(
                &self.doc,
                &row,
                [
                    ("at", at.as_str()),
                    ("stream", entry.stream.as_str()),
                    ("kind", entry.kind.as_str()),
                    ("id", &entry.id),
                    ("data", &entry.data),
                ],
            );
            let _ = self.log.prepend_with_node_1(&row);
            self.log_shown.set(entry.seq);
        }
        trim(&self.log, LOG_LIMIT, Element::last_element_child);
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
    /// Whether this tab leads, follows or holds its own stream, while joined.
    role: Element,
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
            role: by_testid(doc, "shared-role")?,
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

    fn render(&self, s: &SharedCounter, role: Option<&str>) {
        set_message(&self.role, role);
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

/// The "Channels" panel's elements.
struct ChatView {
    name: HtmlInputElement,
    sign_in: Element,
    sign_out: Element,
    user: Element,
    state: Element,
    role: Element,
    room: HtmlInputElement,
    join: Element,
    /// The joined rooms, one button each; the current one is marked.
    rooms: Element,
    current: Element,
    input: HtmlInputElement,
    send: Element,
    to: HtmlInputElement,
    messages: Element,
    error: Element,
    notice: Element,
    /// The `seq` of the newest message on the page, and how many messages the tab had
    /// sent when the message box was last emptied.
    shown: Cell<u64>,
    sent: Cell<u64>,
    /// The rooms as last rendered, to rebuild their buttons only when they change.
    rooms_shown: std::cell::RefCell<(Vec<String>, Option<String>)>,
}

impl ChatView {
    fn new(doc: &Document) -> Result<ChatView, JsValue> {
        Ok(ChatView {
            name: input(doc, "chat-name")?,
            sign_in: by_testid(doc, "chat-sign-in")?,
            sign_out: by_testid(doc, "chat-sign-out")?,
            user: by_testid(doc, "chat-user")?,
            state: by_testid(doc, "chat-state")?,
            role: by_testid(doc, "chat-role")?,
            room: input(doc, "chat-room")?,
            join: by_testid(doc, "chat-join")?,
            rooms: by_testid(doc, "chat-rooms")?,
            current: by_testid(doc, "chat-current")?,
            input: input(doc, "chat-input")?,
            send: by_testid(doc, "chat-send")?,
            to: input(doc, "chat-to")?,
            messages: by_testid(doc, "chat-messages")?,
            error: by_testid(doc, "chat-error")?,
            notice: by_testid(doc, "chat-notice")?,
            shown: Cell::new(0),
            sent: Cell::new(0),
            rooms_shown: Default::default(),
        })
    }

    fn render(&self, doc: &Document, c: &Chat, role: Option<&str>) {
        let signed_in = c.user.is_some();
        set_text(&self.user, c.user.as_deref().unwrap_or(""));
        set_text(&self.state, c.conn.as_str());
        let _ = self.state.set_attribute("data-state", c.conn.as_str());
        set_message(&self.role, role);
        set_disabled(&self.sign_in, c.busy);
        set_disabled(&self.sign_out, !signed_in || c.busy);
        for el in [&self.join, &self.send] {
            set_disabled(el, !signed_in);
        }
        set_text(&self.current, c.current_room().unwrap_or("–"));
        set_message(&self.error, c.error.as_deref());
        set_message(&self.notice, c.notice.as_deref());
        if c.sent != self.sent.get() {
            self.sent.set(c.sent);
            self.input.set_value("");
        }
        self.render_rooms(doc, c);
        self.render_messages(doc, c);
    }

    fn render_rooms(&self, doc: &Document, c: &Chat) {
        let now = (c.rooms.clone(), c.current.clone());
        if *self.rooms_shown.borrow() == now {
            return;
        }
        self.rooms.set_text_content(None);
        for room in &c.rooms {
            let Ok(button) = doc.create_element("button") else {
                return;
            };
            let _ = button.set_attribute("type", "button");
            let _ = button.set_attribute("data-room", room);
            if c.current.as_ref() == Some(room) {
                let _ = button.set_attribute("aria-pressed", "true");
            }
            button.set_text_content(Some(room));
            let _ = self.rooms.append_child(&button);
        }
        *self.rooms_shown.borrow_mut() = now;
    }

    /// Appends the messages not shown yet (oldest first, as a chat reads), dropping the
    /// oldest past [`MESSAGES_KEPT`]; an emptied panel (signed out) empties the list.
    /// Every piece is set as text: a message's markup is never parsed.
    fn render_messages(&self, doc: &Document, c: &Chat) {
        if c.messages.is_empty() && self.messages.child_element_count() > 0 {
            self.messages.set_text_content(None);
        }
        let shown = self.shown.get();
        for m in c.messages.iter().filter(|m| m.seq > shown) {
            let Ok(row) = doc.create_element("li") else {
                return;
            };
            let _ = row.set_attribute("data-id", &m.id);
            let _ = row.set_attribute("data-channel", &m.channel);
            let _ = row.set_attribute("data-from", &m.from);
            let direct = m.channel.starts_with("users/");
            if direct {
                let _ = row.set_attribute("class", "direct");
            }
            let place = if direct {
                "direct".to_owned()
            } else {
                m.channel.clone()
            };
            append_cells(
                doc,
                &row,
                [("from", &m.from), ("where", &place), ("text", &m.text)],
            );
            let _ = self.messages.append_child(&row);
            self.shown.set(m.seq);
        }
        trim(&self.messages, MESSAGES_KEPT, Element::first_element_child);
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
        Conn::Reconnecting(Retry::Dropped { .. }) => {
            format!("The stream dropped; the page reopens it{after} within a second…")
        }
        Conn::Reconnecting(Retry::Opening) => format!("Reconnecting{after}…"),
        Conn::Closed if s.error.is_some() => "The stream was refused: Join to try again.".into(),
        Conn::Closed => "You left: the page holds no connection for it.".into(),
    }
}

/// Appends a `span` of each class to `row`, its text set as text (never parsed as HTML).
fn append_cells<const N: usize>(doc: &Document, row: &Element, cells: [(&str, &str); N]) {
    for (class, text) in cells {
        if let Ok(cell) = doc.create_element("span") {
            let _ = cell.set_attribute("class", class);
            cell.set_text_content(Some(text));
            let _ = row.append_child(&cell);
        }
    }
}

/// Removes children of `list` past `limit`, each the one `oldest` names.
fn trim(list: &Element, limit: usize, oldest: fn(&Element) -> Option<Element>) {
    while list.child_element_count() as usize > limit {
        match oldest(list) {
            Some(old) => old.remove(),
            None => break,
        }
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
