//! A `setTimeout` with its callback owned: dropping a [`Timer`] clears it and frees the
//! callback, so a replaced timer never fires and nothing leaks per timer.

use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};

pub struct Timer {
    handle: i32,
    /// Held for `setTimeout`, which only borrows it.
    _callback: Closure<dyn FnMut()>,
}

impl Timer {
    /// Calls `f` once after `ms` milliseconds, unless the timer is dropped first.
    pub fn start(ms: u64, f: impl FnMut() + 'static) -> Result<Timer, JsValue> {
        let window = web_sys::window().ok_or("no window")?;
        let callback = Closure::<dyn FnMut()>::new(f);
        // setTimeout takes an i32; longer delays fire at once in browsers, so clamp.
        let ms = i32::try_from(ms).unwrap_or(i32::MAX);
        let handle = window.set_timeout_with_callback_and_timeout_and_arguments_0(
            callback.as_ref().unchecked_ref(),
            ms,
        )?;
        Ok(Timer {
            handle,
            _callback: callback,
        })
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        if let Some(window) = web_sys::window() {
            window.clear_timeout_with_handle(self.handle);
        }
        // As with an EventSource's handlers, dropping a timer from inside its own
        // callback (the panel replaces its timer when one fires) is safe: wasm-bindgen
        // frees the closure only after the running call returns.
    }
}
