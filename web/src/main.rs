//! Start-up glue for the sse-counter page: builds the view, wires the buttons, and runs
//! every input through the state machine, applying its effects (open or close the
//! EventSource, fetch why a stream was refused).
//!
//! trunk builds this binary crate for the browser, where wasm-bindgen calls `main` once
//! the module is instantiated. On the host it compiles too (web-sys builds everywhere,
//! its calls only work in a browser), so `cargo test -p web` runs the state machine's
//! tests natively.

mod source;
mod state;
mod view;

use source::{Dispatch, Source};
use state::{Answer, Effect, Msg, State};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::{Rc, Weak};
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};

/// Everything the page holds.
struct App {
    state: State,
    view: view::View,
    /// The open EventSource, if any; replacing or clearing it closes the old one.
    source: Option<Source>,
    /// The page's dispatcher, handed to each new EventSource. Weak, so the app does not
    /// own itself.
    dispatch: Option<Dispatch>,
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
        match effect {
            Effect::CloseSource => app_ref.source = None,
            Effect::OpenSource(url) => {
                let Some(d) = app_ref.dispatch.clone() else {
                    continue;
                };
                match Source::open(&url, &d) {
                    Ok(source) => app_ref.source = Some(source),
                    Err(e) => {
                        let error = js_error_text(&e);
                        effects.extend(app_ref.state.update(Msg::OpenFailed { error }, now_ms()));
                    }
                }
            }
            Effect::AskWhy { url, serial } => ask_why(url, serial, app_ref.dispatch.clone()),
        }
    }
    app_ref.view.render(&app_ref.state);
}

/// The message of a JavaScript exception, or whatever it is as text.
fn js_error_text(e: &JsValue) -> String {
    match e.dyn_ref::<js_sys::Error>() {
        Some(err) => String::from(err.message()),
        None => e.as_string().unwrap_or_else(|| format!("{e:?}")),
    }
}

/// An EventSource only says "error"; the answer's status and JSON body say why. The
/// answer goes back to the state machine as [`Msg::Why`] for connection `serial`.
fn ask_why(url: String, serial: u64, dispatch: Option<Dispatch>) {
    let Some(dispatch) = dispatch else {
        return;
    };
    wasm_bindgen_futures::spawn_local(async move {
        let answer = fetch_answer(&url).await;
        dispatch(Msg::Why { serial, answer });
    });
}

/// The status and body of `GET url`, or `None` when no answer came (server down).
async fn fetch_answer(url: &str) -> Option<Answer> {
    use wasm_bindgen_futures::JsFuture;
    let window = web_sys::window()?;
    let res = JsFuture::from(window.fetch_with_str(url)).await.ok()?;
    let res = res.dyn_into::<web_sys::Response>().ok()?;
    let status = res.status();
    if res.ok() {
        // A 200 is a stream that opens fine this time: do not hold it open just to read
        // it. (A 204 has no body to cancel.)
        if let Some(body) = res.body() {
            let _ = body.cancel();
        }
        return Some(Answer {
            status,
            body: String::new(),
        });
    }
    let body = match res.text() {
        Ok(p) => JsFuture::from(p)
            .await
            .ok()
            .and_then(|v| v.as_string())
            .unwrap_or_default(),
        Err(_) => String::new(),
    };
    Some(Answer { status, body })
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
    let autoconnect = view.prefill(&window.location().search().unwrap_or_default());
    let app = Rc::new(RefCell::new(App {
        state: State::default(),
        view,
        source: None,
        dispatch: None,
    }));
    let weak: Weak<RefCell<App>> = Rc::downgrade(&app);
    let d: Dispatch = Rc::new(move |msg| {
        if let Some(app) = weak.upgrade() {
            dispatch(&app, msg);
        }
    });
    app.borrow_mut().dispatch = Some(Rc::clone(&d));

    let connect = {
        let app = Rc::clone(&app);
        let d = Rc::clone(&d);
        move || {
            let form = app.borrow().view.form();
            d(Msg::Connect(form));
        }
    };
    on_click(&doc, "connect", connect)?;
    let d2 = Rc::clone(&d);
    on_click(&doc, "close", move || d2(Msg::Close))?;
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
    // The app lives as long as the page; the dispatcher holds it only weakly.
    std::mem::forget(app);
    Ok(())
}

fn main() {
    if let Err(e) = start() {
        web_sys::console::error_1(&e);
    }
}
