//! Real-browser tests, each run in headless Chromium (through chromedriver) and in
//! headless Firefox (through geckodriver), against the real `sse-counter` binary serving
//! the real trunk-built page. They show what the project is about: EventSource
//! reconnects by itself after an error, and the page stops that by closing on error or
//! on the `end` event ([`counter`], over HTTP and HTTPS); the shared counter's stream
//! comes back by itself after a drop, a refusal, a restart or a silence ([`shared`]);
//! HTTP/1.1 holds a seventh stream of one origin back where HTTP/2 does not ([`tabs`]);
//! the tabs of one browser hold one stream for the shared counter between them, whoever
//! leads ([`sharing`]), and where the browser cannot share (no Web Locks outside a
//! secure context) each tab holds its own, while a `204` stops a stream for good
//! ([`fallback`]); people sign in, chat, and see their streams end with their
//! session ([`chat`]); and behind nginx over HTTPS, two tabs whose streams are on
//! different instances sharing the counter through Redis see each other's `+1`
//! ([`cluster`]).
//!
//! Needs the page built (`cargo xtask test` builds it; or `trunk build --release`),
//! Debian's `chromium`, `chromium-driver` and `firefox-esr`, `geckodriver` from
//! crates.io, and for [`cluster`] `redis-server` and `nginx` (`cargo xtask test`
//! installs them all; `SSE_COUNTER_BROWSERS=firefox` runs one engine). With `SSE_COUNTER_SCREENSHOTS` set to
//! a directory, the scenarios also take the README's screenshots
//! (`cargo xtask screenshots`).

#[path = "../support/mod.rs"]
mod support;

mod chat;
mod cluster;
mod counter;
mod fallback;
mod harness;
mod shared;
mod sharing;
mod tabs;
