//! The browser's own EventSource, with its callbacks owned: dropping a [`Source`]
//! closes the connection and frees every closure, so nothing leaks per connection and no
//! stale event reaches the page.

use crate::state::Msg;
use std::rc::Rc;
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use web_sys::{Event, EventSource, MessageEvent};

/// How a callback hands an input to the page.
pub type Dispatch = Rc<dyn Fn(Msg)>;

/// One `EventSource` and the Rust callbacks it calls. JavaScript holds only borrowed
/// references to the closures, so they must live exactly as long as the connection:
/// here, owned next to it, and freed by [`Drop`] after the source is closed and detached.
pub struct Source {
    es: EventSource,
    /// Held for the handler set with `onopen`; never called from Rust.
    _on_open: Closure<dyn FnMut(Event)>,
    /// Held for the handler set with `onmessage` (the ticks).
    _on_message: Closure<dyn FnMut(MessageEvent)>,
    /// The `end` listener, also needed to remove it again.
    on_end: Closure<dyn FnMut(MessageEvent)>,
    /// Held for the handler set with `onerror`.
    _on_error: Closure<dyn FnMut(Event)>,
}

impl Source {
    /// `new EventSource(url)` with the page's handlers attached.
    pub fn open(url: &str, dispatch: &Dispatch) -> Result<Source, JsValue> {
        let es = EventSource::new(url)?;
        let d = Rc::clone(dispatch);
        let on_open = Closure::<dyn FnMut(Event)>::new(move |_: Event| d(Msg::Opened));
        let d = Rc::clone(dispatch);
        let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |e: MessageEvent| {
            d(Msg::Message {
                id: e.last_event_id(),
                data: e.data().as_string().unwrap_or_default(),
            })
        });
        let d = Rc::clone(dispatch);
        let on_end = Closure::<dyn FnMut(MessageEvent)>::new(move |e: MessageEvent| {
            d(Msg::End {
                data: e.data().as_string().unwrap_or_default(),
            })
        });
        let d = Rc::clone(dispatch);
        let target = es.clone();
        let on_error = Closure::<dyn FnMut(Event)>::new(move |_: Event| {
            d(Msg::Error {
                closed: target.ready_state() == EventSource::CLOSED,
            })
        });
        es.set_onopen(Some(on_open.as_ref().unchecked_ref()));
        es.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        es.set_onerror(Some(on_error.as_ref().unchecked_ref()));
        es.add_event_listener_with_callback(shared::events::END, on_end.as_ref().unchecked_ref())?;
        Ok(Source {
            es,
            _on_open: on_open,
            _on_message: on_message,
            on_end,
            _on_error: on_error,
        })
    }
}

impl Drop for Source {
    fn drop(&mut self) {
        self.es.close();
        self.es.set_onopen(None);
        self.es.set_onmessage(None);
        self.es.set_onerror(None);
        let _ = self.es.remove_event_listener_with_callback(
            shared::events::END,
            self.on_end.as_ref().unchecked_ref(),
        );
        // The closures are freed right after this, with the struct. That is safe even when
        // this drop runs inside one of them (the `end` handler closes its own source):
        // wasm-bindgen defers freeing a closure until its running call returns.
    }
}
