//! The browser's side of tab sharing (`state::tab_share` has the protocol): the
//! `BroadcastChannel` to the other tabs of the origin and the Web Lock whose holder
//! leads, with their callbacks owned. `navigator.locks` is called through `Reflect`:
//! web-sys has it only behind `--cfg=web_sys_unstable_apis`.

use crate::state::tab_share::{Msg, Wire};
use js_sys::{Function, Promise, Reflect};
use std::cell::RefCell;
use std::rc::Rc;
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use web_sys::{BroadcastChannel, MessageEvent};

/// How the glue hands what it hears to the page.
pub type Handler = Rc<dyn Fn(Msg)>;

pub struct Tabs {
    channel: BroadcastChannel,
    /// Held for the channel's `onmessage`.
    _on_message: Closure<dyn FnMut(MessageEvent)>,
    /// `navigator.locks` and its `request` method.
    locks: JsValue,
    request: Function,
    /// The lock's name: each group of tabs sharing a stream has its own.
    lock_name: &'static str,
    /// The lock's callback: it reports the grant and returns a promise that holds the
    /// lock until [`Tabs::release_lock`] resolves it.
    on_grant: Closure<dyn FnMut(JsValue) -> Promise>,
    /// Swallows the rejection of a request that the page's unloading aborted, which
    /// would otherwise be an uncaught error in the console.
    on_abort: Closure<dyn FnMut(JsValue)>,
    /// The held lock's `resolve`.
    release: Rc<RefCell<Option<Function>>>,
}

impl Tabs {
    /// The channel and the lock manager, or `None` where the browser has either missing
    /// (or the page is not a secure context, which Web Locks need): the tab then holds a
    /// stream of its own.
    ///
    /// `channel_name` and `lock_name` name the group (`tab_share::CHANNEL_NAME`,
    /// `tab_share::LOCK_NAME`: one for every panel's stream).
    pub fn new(handler: &Handler, channel_name: &str, lock_name: &'static str) -> Option<Tabs> {
        let window = web_sys::window()?;
        let locks = Reflect::get(&window.navigator(), &"locks".into()).ok()?;
        if locks.is_undefined() || locks.is_null() {
            return None;
        }
        let request: Function = Reflect::get(&locks, &"request".into())
            .ok()?
            .dyn_into()
            .ok()?;
        let channel = BroadcastChannel::new(channel_name).ok()?;
        let h = Rc::clone(handler);
        let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |e: MessageEvent| {
            // Another tab's message; one that does not parse (another version of the
            // page, say) is ignored.
            if let Some(wire) = e
                .data()
                .as_string()
                .and_then(|s| serde_json::from_str::<Wire>(&s).ok())
            {
                h(Msg::Peer(wire));
            }
        });
        channel.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        let release: Rc<RefCell<Option<Function>>> = Rc::default();
        let held = Rc::clone(&release);
        let h = Rc::clone(handler);
        let on_grant = Closure::<dyn FnMut(JsValue) -> Promise>::new(move |_lock: JsValue| {
            let held = Rc::clone(&held);
            let promise = Promise::new(&mut |resolve, _reject| {
                *held.borrow_mut() = Some(resolve);
            });
            h(Msg::LockGranted);
            promise
        });
        let on_abort = Closure::<dyn FnMut(JsValue)>::new(|_: JsValue| {});
        Some(Tabs {
            channel,
            _on_message: on_message,
            locks,
            request,
            lock_name,
            on_grant,
            on_abort,
            release,
        })
    }

    pub fn post(&self, wire: &Wire) {
        if let Ok(json) = serde_json::to_string(wire) {
            if let Err(e) = self.channel.post_message(&JsValue::from_str(&json)) {
                web_sys::console::error_1(&e);
            }
        }
    }

    /// `navigator.locks.request(lock_name, callback)`: the callback runs when this tab's
    /// turn comes, which may be at once.
    pub fn request_lock(&self) {
        match self.request.call2(
            &self.locks,
            &JsValue::from_str(self.lock_name),
            self.on_grant.as_ref(),
        ) {
            Ok(p) => {
                if let Ok(p) = p.dyn_into::<Promise>() {
                    let _ = p.catch(&self.on_abort);
                }
            }
            Err(e) => web_sys::console::error_1(&e),
        }
    }

    /// Resolves the held lock's promise: the browser gives the lock to the next tab.
    pub fn release_lock(&self) {
        if let Some(resolve) = self.release.borrow_mut().take() {
            let _ = resolve.call0(&JsValue::UNDEFINED);
        }
    }
}

impl Drop for Tabs {
    fn drop(&mut self) {
        self.channel.set_onmessage(None);
        self.channel.close();
        self.release_lock();
    }
}
