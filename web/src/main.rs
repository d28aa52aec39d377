//! Start-up glue for the sse-counter page: builds the view, wires the buttons, and runs
//! every input through the state machine, applying its effects (open or close the
//! EventSource, fetch why a stream was refused).

mod source;
mod state;
mod view;

use source::{Dispatch, Source};
use state::{Effect, Msg, State};
use std::cell::RefCell;
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

/// Runs one input through the state machine and applies what it asks for.
fn dispatch(app: &Rc<RefCell<App>>, msg: Msg) {
    let mut guard = app.borrow_mut();
    let app_ref = &mut *guard;
    let effects = app_ref.state.update(msg, now_ms());
    for effect in effects {
        match effect {
            Effect::CloseSource => app_ref.source = None,
            Effect::OpenSource(url) => {
                let Some(d) = app_ref.dispatch.clone() else {
                    continue;
                };
                match Source::open(&url, &d) {
                    Ok(source) => app_ref.source = Some(source),
                    Err(e) => {
                        app_ref.state.error = Some(format!("cannot open EventSource: {e:?}"));
                    }
                }
            }
            Effect::FetchRefusal(url) => fetch_refusal(url, app_ref.dispatch.clone()),
        }
    }
    app_ref.view.render(&app_ref.state);
}

/// An EventSource only says "error"; the answer's status and JSON body say why.
fn fetch_refusal(url: String, dispatch: Option<Dispatch>) {
    let Some(dispatch) = dispatch else {
        return;
    };
    wasm_bindgen_futures::spawn_local(async move {
        let Some(window) = web_sys::window() else {
            return;
        };
        let Ok(res) = wasm_bindgen_futures::JsFuture::from(window.fetch_with_str(&url)).await
        else {
            return;
        };
        let Ok(res) = res.dyn_into::<web_sys::Response>() else {
            return;
        };
        let status = res.status();
        if res.ok() {
            // The server took it this time: do not hold a stream open just to read it.
            if let Some(body) = res.body() {
                let _ = body.cancel();
            }
            dispatch(Msg::Refused {
                status,
                body: String::new(),
            });
            return;
        }
        let body = match res.text() {
            Ok(p) => wasm_bindgen_futures::JsFuture::from(p)
                .await
                .ok()
                .and_then(|v| v.as_string())
                .unwrap_or_default(),
            Err(_) => String::new(),
        };
        dispatch(Msg::Refused { status, body });
    });
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
    view.prefill(&window.location().search().unwrap_or_default());
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
    // The app lives as long as the page; the dispatcher holds it only weakly.
    std::mem::forget(app);
    Ok(())
}

fn main() {
    if let Err(e) = start() {
        web_sys::console::error_1(&e);
    }
}
