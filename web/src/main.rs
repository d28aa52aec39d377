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
mod timer;
mod view;

use source::{Handler, Source, SourceEvent};
use state::reconnect::Config;
use state::shared_counter::{self, join_requested};
use state::{Answer, Effect, Msg, State};
use std::cell::RefCell;
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
    /// The shared counter panel's EventSource, if any.
    shared_source: Option<Source>,
    /// The shared counter panel's one timer; replacing or clearing it cancels the old one.
    shared_timer: Option<timer::Timer>,
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
    }
    None
}

fn apply_shared(app: &mut App, effect: shared_counter::Effect, d: Dispatch) -> Option<Msg> {
    use shared_counter::{Effect, Msg as SharedMsg};
    match effect {
        Effect::CloseSource => app.shared_source = None,
        Effect::OpenSource(url) => {
            let handler: Handler = Rc::new(move |e| d(Msg::Shared(shared_msg(e))));
            let names = [
                "message",
                shared::events::RESET,
                shared::events::HEARTBEAT,
                shared::events::END,
            ];
            match Source::open(&url, &names, &handler) {
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
        SourceEvent::Event { name, id, data } => match name {
            shared::events::RESET => Msg::Reset { id, data },
            shared::events::HEARTBEAT => Msg::Heartbeat { data },
            shared::events::END => Msg::End { data },
            _ => Msg::Value { id, data },
        },
        SourceEvent::Error { closed } => Msg::Error { closed },
    }
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
            shared_timer: None,
            dispatch: Rc::new(move |msg| {
                if let Some(app) = weak.upgrade() {
                    dispatch(&app, msg);
                }
            }),
        })
    });
    let d = Rc::clone(&app.borrow().dispatch);

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
    {
        let a = app.borrow();
        a.view.render(&a.state);
    }
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
