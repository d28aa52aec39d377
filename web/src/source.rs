//! The browser's own EventSource, with its callbacks owned: dropping a [`Source`]
//! closes the connection and frees every closure, so nothing leaks per connection and no
//! stale event reaches the page.

use std::rc::Rc;
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use web_sys::{Event, EventSource, MessageEvent};

/// What an EventSource reports, before the page turns it into one of its messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceEvent {
    /// The `open` event.
    Open,
    /// An event the source listens to (`message` is the unnamed ones): its type,
    /// `lastEventId` and `data`.
    Event {
        name: &'static str,
        id: String,
        data: String,
    },
    /// The `error` event; `closed` is whether the readyState is CLOSED, meaning the
    /// browser itself will not reconnect.
    Error { closed: bool },
}

/// How a source hands what it hears to the page.
pub type Handler = Rc<dyn Fn(SourceEvent)>;

/// A listener with the event type it is attached for.
type Listener = (&'static str, Closure<dyn FnMut(Event)>);

/// One `EventSource` and the Rust callbacks it calls. JavaScript holds only borrowed
/// references to the closures, so they must live exactly as long as the connection:
/// here, owned next to it, and freed by [`Drop`] after the source is closed and detached.
pub struct Source {
    es: EventSource,
    /// Every listener with its event type: held for JavaScript, and needed to remove it
    /// again.
    listeners: Vec<Listener>,
}

impl Source {
    /// `new EventSource(url)`, calling `handler` on `open`, `error` and each event type
    /// in `names` (`"message"` for unnamed events).
    pub fn open(url: &str, names: &[&'static str], handler: &Handler) -> Result<Source, JsValue> {
        let es = EventSource::new(url)?;
        let mut listeners: Vec<Listener> = Vec::new();
        let h = Rc::clone(handler);
        listeners.push(("open", Closure::new(move |_: Event| h(SourceEvent::Open))));
        let h = Rc::clone(handler);
        let target = es.clone();
        listeners.push((
            "error",
            Closure::new(move |_: Event| {
                h(SourceEvent::Error {
                    closed: target.ready_state() == EventSource::CLOSED,
                })
            }),
        ));
        for &name in names {
            let h = Rc::clone(handler);
            listeners.push((
                name,
                Closure::new(move |e: Event| {
                    if let Some(e) = e.dyn_ref::<MessageEvent>() {
                        h(SourceEvent::Event {
                            name,
                            id: e.last_event_id(),
                            data: e.data().as_string().unwrap_or_default(),
                        })
                    }
                }),
            ));
        }
        // Owned before any listener is attached: if attaching one fails, dropping the
        // source closes it and detaches the others.
        let source = Source { es, listeners };
        for (name, cb) in &source.listeners {
            source
                .es
                .add_event_listener_with_callback(name, cb.as_ref().unchecked_ref())?;
        }
        Ok(source)
    }
}

impl Drop for Source {
    fn drop(&mut self) {
        self.es.close();
        for (name, cb) in &self.listeners {
            let _ = self
                .es
                .remove_event_listener_with_callback(name, cb.as_ref().unchecked_ref());
        }
        // The closures are freed right after this, with the struct. That is safe even when
        // this drop runs inside one of them (the `end` handler closes its own source):
        // wasm-bindgen defers freeing a closure until its running call returns.
    }
}
