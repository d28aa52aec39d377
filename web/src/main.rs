//! Start-up glue for the sse-counter page: builds the view, wires the buttons, and runs
//! every input through the state machine, applying its effects (open or close an
//! EventSource, fetch why a stream was refused, post a `+1`).
//!
//! trunk builds this binary crate for the browser, where wasm-bindgen calls `main` once
//! the module is instantiated. On the host it compiles too (web-sys builds everywhere,
//! its calls only work in a browser), so `cargo test -p web` runs the state machine's
//! tests natively.

mod source;
mod state;
mod tabs;
mod timer;
mod view;

use source::{Handler, Source, SourceEvent};
use state::chat;
use state::reconnect::Config;
use state::shared_counter::{self, join_requested};
use state::tab_share::{self, share_requested};
use state::{Answer, Effect, Msg, State, TabsEffect};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::{Rc, Weak};
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

/// How a callback hands an input to the page.
type Dispatch = Rc<dyn Fn(Msg)>;

/// Everything the page holds.
struct App {
    state: State,
    view: view::View,
    /// The per-client counter's EventSource, if any; replacing or clearing it closes the
    /// old one.
    source: Option<Source>,
    /// The shared counter panel's own EventSource, if any (no sharing).
    shared_source: Option<Source>,
    /// The stream this tab holds for every tab as their leader: the shared counter's and
    /// the chat's channels, one for both.
    leader_source: Option<LeaderSource>,
    /// The leader's old `/api/shared` stream during a handover to `/api/events`.
    handover_source: Option<LeaderSource>,
    /// The leader's one-shot `/api/shared` for the counter's current value.
    snapshot_source: Option<Source>,
    /// The channel to the other tabs and the lock, while the page's stream is shared.
    tabs: Option<tabs::Tabs>,
    /// The shared counter panel's one timer; replacing or clearing it cancels the old one.
    shared_timer: Option<timer::Timer>,
    /// The chat's own EventSource (no sharing).
    chat_source: Option<Source>,
    /// The chat's session refresh timer, and its retry timer (after the browser gave up
    /// on its stream).
    chat_timer: Option<timer::Timer>,
    chat_retry_timer: Option<timer::Timer>,
    /// The page's dispatcher, handed to each new EventSource and request. It holds the
    /// app weakly, so the app does not own itself.
    dispatch: Dispatch,
}

fn now_ms() -> u64 {
    web_sys::window()
        .and_then(|w| w.performance())
        .map_or(0, |p| p.now() as u64)
}

/// Runs one input through the state machine and applies what it asks for. What the
/// glue itself learns while applying an effect (a source that cannot be made) goes back
/// through the state machine too, before the page is rendered.
fn dispatch(app: &Rc<RefCell<App>>, msg: Msg) {
    let mut guard = app.borrow_mut();
    let app_ref = &mut *guard;
    let mut effects = VecDeque::from(app_ref.state.update(msg, now_ms()));
    while let Some(effect) = effects.pop_front() {
        if let Some(msg) = apply(app_ref, effect) {
            effects.extend(app_ref.state.update(msg, now_ms()));
        }
    }
    app_ref.view.render(&app_ref.state);
}

/// Applies one effect; returns what the page must hear at once about it, if anything.
fn apply(app: &mut App, effect: Effect) -> Option<Msg> {
    let d = Rc::clone(&app.dispatch);
    match effect {
        Effect::CloseSource => app.source = None,
        Effect::OpenSource(url) => {
            let handler: Handler = Rc::new(move |e| d(counter_msg(e)));
            match Source::open(&url, &["message", shared::events::END], &handler) {
                Ok(source) => app.source = Some(source),
                Err(e) => {
                    return Some(Msg::OpenFailed {
                        error: js_error_text(&e),
                    })
                }
            }
        }
        Effect::AskWhy { url, serial } => spawn(async move {
            let answer = fetch_answer(&url).await;
            d(Msg::Why { serial, answer })
        }),
        Effect::Shared(effect) => return apply_shared(app, effect, d),
        Effect::Tabs(effect) => return apply_tabs(app, effect, d),
        Effect::Chat(effect) => apply_chat(app, effect, d),
        Effect::ChatOwn(effect) => apply_chat_own(app, effect, d),
    }
    None
}

/// The leader's stream, and whether it is handing over to a new one: its events then
/// come as [`tab_share::Msg::HandoverEvent`].
struct LeaderSource {
    _source: Source,
    handing_over: Rc<Cell<bool>>,
}

/// The event types of the chat's stream.
const CHAT_EVENTS: [&str; 4] = [
    chat::MESSAGE_TYPE,
    shared::events::RESET,
    shared::events::HEARTBEAT,
    shared::events::END,
];

/// The chat's own stream, while the tab does not share.
fn apply_chat_own(app: &mut App, effect: TabsEffect, d: Dispatch) {
    match effect {
        TabsEffect::OpenSource(url) => {
            app.chat_source = None;
            let handler: Handler = Rc::new(move |e| d(Msg::Chat(chat_msg(e))));
            match Source::open(&url, &CHAT_EVENTS, &handler) {
                Ok(source) => app.chat_source = Some(source),
                // Only a URL the browser cannot parse gets here, and the page makes them.
                Err(e) => web_sys::console::error_1(&e),
            }
        }
        // The state asks nothing else of the chat's own stream.
        _ => app.chat_source = None,
    }
}

fn apply_chat(app: &mut App, effect: chat::Effect, d: Dispatch) {
    use chat::{Effect, Msg as ChatMsg, Purpose};
    let session = move |d: Dispatch, purpose: Purpose, method: &'static str, path, body| {
        spawn(async move {
            let answer = request(method, path, body).await;
            d(Msg::Chat(ChatMsg::Session {
                purpose,
                answer,
                now_unix_ms: js_sys::Date::now() as u64,
                jitter: js_sys::Math::random(),
            }))
        })
    };
    match effect {
        Effect::GetSession(purpose) => session(d, purpose, "GET", shared::paths::SESSION, None),
        Effect::PostSession { body } => session(
            d,
            Purpose::SignIn,
            "POST",
            shared::paths::SESSION,
            Some(body),
        ),
        Effect::RefreshSession(purpose) => {
            session(d, purpose, "POST", shared::paths::SESSION_REFRESH, None)
        }
        Effect::DeleteSession => spawn(async move {
            let answer = request("DELETE", shared::paths::SESSION, None).await;
            d(Msg::Chat(ChatMsg::SignedOut { answer }))
        }),
        Effect::Publish { channel, body } => spawn(async move {
            let answer = request("POST", shared::paths::PUBLISH, Some(body)).await;
            d(Msg::Chat(ChatMsg::Sent { channel, answer }))
        }),
        Effect::SetTimer { generation, ms } => {
            app.chat_timer = None;
            match timer::Timer::start(ms, move || d(Msg::Chat(ChatMsg::RefreshDue { generation })))
            {
                Ok(t) => app.chat_timer = Some(t),
                Err(e) => web_sys::console::error_1(&e),
            }
        }
        Effect::ClearTimer => app.chat_timer = None,
        Effect::SetRetryTimer { generation, ms } => {
            app.chat_retry_timer = None;
            match timer::Timer::start(ms, move || d(Msg::Chat(ChatMsg::RetryDue { generation }))) {
                Ok(t) => app.chat_retry_timer = Some(t),
                Err(e) => web_sys::console::error_1(&e),
            }
        }
        // The state turns these into stream effects before they reach the glue.
        Effect::Need(_) | Effect::Reopen => {}
    }
}

fn apply_tabs(app: &mut App, effect: TabsEffect, d: Dispatch) -> Option<Msg> {
    let tabs = app.tabs.as_ref()?;
    match effect {
        TabsEffect::Post(wire) => tabs.post(&wire),
        TabsEffect::RequestLock => tabs.request_lock(),
        TabsEffect::ReleaseLock => tabs.release_lock(),
        TabsEffect::CloseSource => {
            app.leader_source = None;
            app.handover_source = None;
            app.snapshot_source = None;
        }
        TabsEffect::EndHandover => {
            app.handover_source = None;
            app.snapshot_source = None;
        }
        TabsEffect::OpenSource(url) => return open_leader(app, &url, false, d),
        TabsEffect::HandOver(url) => return open_leader(app, &url, true, d),
        TabsEffect::Snapshot(url) => {
            let handler: Handler = Rc::new(move |e| match e {
                SourceEvent::Open => {}
                SourceEvent::Event { name, data, .. } => {
                    d(Msg::Tabs(tab_share::Msg::SnapshotEvent {
                        name: name.to_owned(),
                        data,
                    }))
                }
                SourceEvent::Error { .. } => d(Msg::Tabs(tab_share::Msg::SnapshotError)),
            });
            match Source::open(&url, &SHARED_EVENTS, &handler) {
                Ok(source) => app.snapshot_source = Some(source),
                Err(_) => return Some(Msg::Tabs(tab_share::Msg::SnapshotError)),
            }
        }
    }
    None
}

/// Opens the leader's stream on `url`, replacing the old one: closed, or with
/// `handover` kept (and its events reported as such) until the handover ends.
fn open_leader(app: &mut App, url: &str, handover: bool, d: Dispatch) -> Option<Msg> {
    let old = app.leader_source.take();
    app.handover_source = None;
    if let Some(old) = old.filter(|_| handover) {
        old.handing_over.set(true);
        app.handover_source = Some(old);
    }
    let handing_over = Rc::new(Cell::new(false));
    let flag = Rc::clone(&handing_over);
    let handler: Handler = Rc::new(move |e| {
        if let Some(msg) = leader_msg(e, flag.get()) {
            d(Msg::Tabs(msg))
        }
    });
    match Source::open(url, &SHARED_EVENTS, &handler) {
        Ok(source) => {
            app.leader_source = Some(LeaderSource {
                _source: source,
                handing_over,
            });
            None
        }
        Err(e) => Some(Msg::Shared(shared_counter::Msg::OpenFailed {
            error: js_error_text(&e),
        })),
    }
}

/// The event types of the shared counter's stream (and of the leader's, whose chat
/// messages are `message` events too).
const SHARED_EVENTS: [&str; 4] = [
    "message",
    shared::events::RESET,
    shared::events::HEARTBEAT,
    shared::events::END,
];

fn apply_shared(app: &mut App, effect: shared_counter::Effect, d: Dispatch) -> Option<Msg> {
    use shared_counter::{Effect, Msg as SharedMsg};
    match effect {
        Effect::CloseSource => app.shared_source = None,
        Effect::OpenSource(url) => {
            let handler: Handler = Rc::new(move |e| d(Msg::Shared(shared_msg(e))));
            match Source::open(&url, &SHARED_EVENTS, &handler) {
                Ok(source) => app.shared_source = Some(source),
                Err(e) => {
                    return Some(Msg::Shared(SharedMsg::OpenFailed {
                        error: js_error_text(&e),
                    }))
                }
            }
        }
        Effect::AskWhy { url, serial } => spawn(async move {
            let answer = fetch_answer(&url).await;
            d(Msg::Shared(SharedMsg::Why {
                serial,
                answer,
                jitter: js_sys::Math::random(),
            }))
        }),
        Effect::PostIncrement => spawn(async move {
            let answer = post_increment().await;
            d(Msg::Shared(SharedMsg::Incremented { answer }))
        }),
        Effect::SetTimer { generation, ms } => {
            app.shared_timer = None;
            match timer::Timer::start(ms, move || d(Msg::Shared(SharedMsg::Timer { generation }))) {
                Ok(t) => app.shared_timer = Some(t),
                // Only a page without a window gets here, and it has no panel either.
                Err(e) => web_sys::console::error_1(&e),
            }
        }
        Effect::ClearTimer => app.shared_timer = None,
    }
    None
}

/// The per-client counter's message for what its EventSource reports.
fn counter_msg(e: SourceEvent) -> Msg {
    match e {
        SourceEvent::Open => Msg::Opened,
        SourceEvent::Event { name, data, .. } if name == shared::events::END => Msg::End { data },
        SourceEvent::Event { id, data, .. } => Msg::Message { id, data },
        SourceEvent::Error { closed } => Msg::Error { closed },
    }
}

/// The shared panel's message for what its EventSource reports.
fn shared_msg(e: SourceEvent) -> shared_counter::Msg {
    use shared_counter::Msg;
    match e {
        SourceEvent::Open => Msg::Opened,
        SourceEvent::Event { name, id, data } => Msg::from_event(name, id, data),
        SourceEvent::Error { closed } => Msg::Error {
            closed,
            jitter: js_sys::Math::random(),
        },
    }
}

/// The chat's message for what its own EventSource reports.
fn chat_msg(e: SourceEvent) -> chat::Msg {
    use chat::Msg;
    match e {
        SourceEvent::Open => Msg::Opened,
        SourceEvent::Event { name, id, data } => Msg::Event {
            name: name.to_owned(),
            id,
            data,
        },
        SourceEvent::Error { closed } => Msg::Error { closed },
    }
}

/// The sharing protocol's message for what the leader's EventSource reports; an old
/// stream handing over reports only its events (its browser's reconnects are its own).
fn leader_msg(e: SourceEvent, handing_over: bool) -> Option<tab_share::Msg> {
    use tab_share::Msg;
    Some(match e {
        SourceEvent::Event { name, id, data } if handing_over => Msg::HandoverEvent {
            name: name.to_owned(),
            id,
            data,
        },
        _ if handing_over => return None,
        SourceEvent::Open => Msg::SourceOpened,
        SourceEvent::Event { name, id, data } => Msg::SourceEvent {
            name: name.to_owned(),
            id,
            data,
        },
        SourceEvent::Error { closed } => Msg::SourceError {
            closed,
            jitter: js_sys::Math::random(),
        },
    })
}

/// Runs a request on the browser's loop; its answer comes back as a message.
fn spawn(f: impl std::future::Future<Output = ()> + 'static) {
    wasm_bindgen_futures::spawn_local(f);
}

/// The message of a JavaScript exception, or whatever it is as text.
fn js_error_text(e: &JsValue) -> String {
    match e.dyn_ref::<js_sys::Error>() {
        Some(err) => String::from(err.message()),
        None => e.as_string().unwrap_or_else(|| format!("{e:?}")),
    }
}

/// The answer to `GET url`, or `None` when none came (server down). An EventSource
/// only says "error"; the answer's status, `Retry-After` and JSON body say why.
async fn fetch_answer(url: &str) -> Option<Answer> {
    let window = web_sys::window()?;
    let res = JsFuture::from(window.fetch_with_str(url)).await.ok()?;
    // A 200 is a stream that opens fine this time: do not hold it open just to read it.
    Some(read_answer(res.dyn_into().ok()?, false).await)
}

/// The answer to `POST /api/shared/increment` (no body), or `None` when none came.
async fn post_increment() -> Option<Answer> {
    let window = web_sys::window()?;
    let init = web_sys::RequestInit::new();
    init.set_method("POST");
    let request =
        web_sys::Request::new_with_str_and_init(shared::paths::SHARED_INCREMENT, &init).ok()?;
    let res = JsFuture::from(window.fetch_with_request(&request))
        .await
        .ok()?;
    Some(read_answer(res.dyn_into().ok()?, true).await)
}

/// The answer to a same-origin request with an optional JSON body, or `None` when
/// none came. The browser sends the `sse_token` cookie with it (the page cannot read
/// it: it is `HttpOnly`), and an `Origin` for the server's CSRF check.
async fn request(method: &str, path: &str, json: Option<String>) -> Option<Answer> {
    let window = web_sys::window()?;
    let init = web_sys::RequestInit::new();
    init.set_method(method);
    init.set_credentials(web_sys::RequestCredentials::SameOrigin);
    if let Some(json) = json {
        let headers = web_sys::Headers::new().ok()?;
        headers.set("content-type", "application/json").ok()?;
        init.set_headers(&headers);
        init.set_body(&JsValue::from_str(&json));
    }
    let request = web_sys::Request::new_with_str_and_init(path, &init).ok()?;
    let res = JsFuture::from(window.fetch_with_request(&request))
        .await
        .ok()?;
    Some(read_answer(res.dyn_into().ok()?, true).await)
}

/// Status, `Retry-After` and body of a response; the body of a `2xx` only when
/// `read_ok_body` (otherwise it is cancelled unread).
async fn read_answer(res: web_sys::Response, read_ok_body: bool) -> Answer {
    let status = res.status();
    let retry_after = res.headers().get("retry-after").ok().flatten();
    let body = if res.ok() && !read_ok_body {
        // (A 204 has no body to cancel.)
        if let Some(body) = res.body() {
            let _ = body.cancel();
        }
        String::new()
    } else {
        match res.text() {
            Ok(p) => JsFuture::from(p)
                .await
                .ok()
                .and_then(|v| v.as_string())
                .unwrap_or_default(),
            Err(_) => String::new(),
        }
    };
    Answer {
        status,
        retry_after,
        body,
    }
}

/// Calls `f` on every click of the element with this `data-testid`.
fn on_click(
    doc: &web_sys::Document,
    testid: &str,
    f: impl FnMut() + 'static,
) -> Result<(), JsValue> {
    let el = doc
        .query_selector(&format!("[data-testid=\"{testid}\"]"))?
        .ok_or_else(|| JsValue::from_str(&format!("no {testid} button")))?;
    let mut f = f;
    let cb = Closure::<dyn FnMut(web_sys::Event)>::new(move |e: web_sys::Event| {
        e.prevent_default();
        f();
    });
    el.add_event_listener_with_callback("click", cb.as_ref().unchecked_ref())?;
    // The buttons live as long as the page, and so must their listeners.
    cb.forget();
    Ok(())
}

/// The chat's buttons: each reads the inputs it needs as they are at the click.
fn wire_chat(doc: &web_sys::Document, app: &Rc<RefCell<App>>, d: &Dispatch) -> Result<(), JsValue> {
    let read = |testid: &'static str| {
        let app = Rc::clone(app);
        move || app.borrow().view.chat_input(testid)
    };
    let (name, room, text, to) = (
        read("chat-name"),
        read("chat-room"),
        read("chat-input"),
        read("chat-to"),
    );
    let dd = Rc::clone(d);
    on_click(doc, "chat-sign-in", move || {
        dd(Msg::Chat(chat::Msg::SignIn { name: name() }))
    })?;
    let dd = Rc::clone(d);
    on_click(doc, "chat-sign-out", move || {
        dd(Msg::Chat(chat::Msg::SignOut))
    })?;
    let dd = Rc::clone(d);
    on_click(doc, "chat-join", move || {
        dd(Msg::Chat(chat::Msg::Join { room: room() }))
    })?;
    let dd = Rc::clone(d);
    on_click(doc, "chat-send", move || {
        dd(Msg::Chat(chat::Msg::Send {
            text: text(),
            to: to(),
        }))
    })?;
    // A click on one of the joined rooms (buttons the view makes) picks it.
    let dd = Rc::clone(d);
    let rooms = doc
        .query_selector("[data-testid=\"chat-rooms\"]")?
        .ok_or("no chat-rooms list")?;
    let cb = Closure::<dyn FnMut(web_sys::Event)>::new(move |e: web_sys::Event| {
        let room = e
            .target()
            .and_then(|t| t.dyn_into::<web_sys::Element>().ok())
            .and_then(|el| el.get_attribute("data-room"));
        if let Some(room) = room {
            dd(Msg::Chat(chat::Msg::Pick { room }));
        }
    });
    rooms.add_event_listener_with_callback("click", cb.as_ref().unchecked_ref())?;
    // The list lives as long as the page.
    cb.forget();
    Ok(())
}

fn start() -> Result<(), JsValue> {
    let window = web_sys::window().ok_or("no window")?;
    let doc = window.document().ok_or("no document")?;
    let view = view::View::new(doc.clone())?;
    let query = window.location().search().unwrap_or_default();
    let autoconnect = view.prefill(&query);
    let app = Rc::new_cyclic(|weak: &Weak<RefCell<App>>| {
        let weak = weak.clone();
        RefCell::new(App {
            state: State::new(Config::from_query(&query)),
            view,
            source: None,
            shared_source: None,
            leader_source: None,
            handover_source: None,
            snapshot_source: None,
            tabs: None,
            shared_timer: None,
            chat_source: None,
            chat_timer: None,
            chat_retry_timer: None,
            dispatch: Rc::new(move |msg| {
                if let Some(app) = weak.upgrade() {
                    dispatch(&app, msg);
                }
            }),
        })
    });
    let d = Rc::clone(&app.borrow().dispatch);
    if share_requested(&query) {
        let handler: tabs::Handler = {
            let d = Rc::clone(&d);
            Rc::new(move |msg| d(Msg::Tabs(msg)))
        };
        if let Some(tabs) = tabs::Tabs::new(&handler, tab_share::CHANNEL_NAME, tab_share::LOCK_NAME)
        {
            let mut a = app.borrow_mut();
            a.tabs = Some(tabs);
            let tab = format!(
                "{:x}",
                (js_sys::Math::random() * 9_007_199_254_740_992.0) as u64
            );
            a.state = std::mem::take(&mut a.state).sharing(tab);
        }
    }
    if app.borrow().tabs.is_some() {
        d(Msg::Tabs(tab_share::Msg::Start));
        // The tab tells the others when it goes (closes, navigates away), so that they
        // stop counting what it needed; the browser frees its lock by itself.
        let d = Rc::clone(&d);
        let cb = Closure::<dyn FnMut(web_sys::Event)>::new(move |_: web_sys::Event| {
            d(Msg::Tabs(tab_share::Msg::Leaving));
        });
        window.add_event_listener_with_callback("pagehide", cb.as_ref().unchecked_ref())?;
        // It must live as long as the page.
        cb.forget();
    }

    let connect = {
        let app = Rc::clone(&app);
        let d = Rc::clone(&d);
        move || {
            let form = app.borrow().view.form();
            d(Msg::Connect(form));
        }
    };
    on_click(&doc, "connect", connect)?;
    for (testid, msg) in [
        ("close", Msg::Close),
        ("shared-join", Msg::Shared(shared_counter::Msg::Join)),
        ("shared-leave", Msg::Shared(shared_counter::Msg::Leave)),
        (
            "shared-increment",
            Msg::Shared(shared_counter::Msg::Increment),
        ),
    ] {
        let d = Rc::clone(&d);
        on_click(&doc, testid, move || d(msg.clone()))?;
    }
    wire_chat(&doc, &app, &d)?;
    {
        let a = app.borrow();
        a.view.render(&a.state);
    }
    // Who is signed in already (a cookie from before, or another tab's sign-in).
    d(Msg::Chat(chat::Msg::Start));
    if autoconnect {
        // `/?count=3&interval_ms=200&autoconnect=1`: for demo links and headless
        // screenshots, which cannot click Connect.
        let form = app.borrow().view.form();
        d(Msg::Connect(form));
    }
    if join_requested(&query) {
        // `/?shared=1` joins the shared counter at once, for the same reason
        // (`&heartbeat_ms=` and `&retry_ms=` set what the page assumes of the server).
        d(Msg::Shared(shared_counter::Msg::Join));
    }
    // The app lives as long as the page; the dispatcher holds it only weakly.
    std::mem::forget(app);
    Ok(())
}

fn main() {
    if let Err(e) = start() {
        web_sys::console::error_1(&e);
    }
}
