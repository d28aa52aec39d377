//! The per-client counter: `num` = first..=count, one per interval, from the moment the
//! stream opened; resumable after any `num` through `Last-Event-ID`.
//!
//! Each `num` is sent exactly once, in order, and a late tick (the client was not
//! reading) pushes the schedule back by the delay instead of bursting to catch up.

use crate::sse::{frame, Due, StreamKind};
use bytes::Bytes;
use std::task::Context;
use std::time::Duration;
use tokio::time::Instant;

/// Where a stream starts and how it runs, checked before the response is made.
#[derive(Debug, Clone, Copy)]
pub struct CounterPlan {
    /// The first `num` to send.
    pub first: u64,
    pub count: u64,
    pub interval: Duration,
}

pub struct Counter {
    plan: CounterPlan,
    next_num: u64,
    next_tick: Instant,
}

impl Counter {
    pub fn new(plan: CounterPlan) -> Self {
        Counter {
            plan,
            next_num: plan.first,
            next_tick: Instant::now() + plan.interval,
        }
    }
}

impl StreamKind for Counter {
    fn poll_due(&mut self, now: Instant, _cx: &mut Context<'_>) -> Due {
        if self.next_num > self.plan.count {
            Due::Complete
        } else if now >= self.next_tick {
            Due::Ready
        } else {
            Due::At(self.next_tick)
        }
    }

    fn next_frame(&mut self, now: Instant) -> Bytes {
        let num = self.next_num;
        self.next_num += 1;
        // No drift while on time; when late, the next tick is one interval after this
        // one, never a burst.
        let ideal = self.next_tick + self.plan.interval;
        self.next_tick = if ideal > now {
            ideal
        } else {
            now + self.plan.interval
        };
        tick_frame(num, crate::unix_micros())
    }

    fn last_id(&self) -> u64 {
        self.next_num.saturating_sub(1)
    }

    fn grid(&self) -> Duration {
        grid_for(self.plan.interval)
    }
}

/// The frame of one tick: `frame::json(None, Some(num), &Tick { .. })`'s bytes, from
/// `frame::numbers` (whose property test proves it).
fn tick_frame(num: u64, sent_at_us: u64) -> Bytes {
    frame::numbers(num, [("num", num), ("sent_at_us", sent_at_us)])
}

/// The wake-up grid for a stream ticking every `interval`: a thirtieth of it, between
/// 1 ms (tokio's own timer resolution) and 3 ms.
///
/// A coarser grid batches more wake-ups (less CPU per event) but delays each tick by up
/// to one cell; 3 ms is where the delivery p99 of `cargo xtask bench`'s 10,000-stream
/// scenario stays well under 1 ms while the CPU per event falls (docs/benchmarks.md).
/// A thirtieth, not a hundredth, so that 10 Hz streams get the 3 ms cells too: at
/// 1 ms a cell of its 10 Hz scenario held a third of the streams, and the runtime's
/// sleep and wake-up per cell were a fifth of its CPU (docs/performance.md).
fn grid_for(interval: Duration) -> Duration {
    (interval / 30).clamp(Duration::from_millis(1), Duration::from_millis(3))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::task::noop_waker_ref;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn tick_frame_is_the_json_frame(num in any::<u64>(), sent_at_us in any::<u64>()) {
            let tick = shared::Tick { num, sent_at_us };
            prop_assert_eq!(
                tick_frame(num, sent_at_us),
                frame::json(None, Some(num), &tick).unwrap()
            );
        }
    }

    #[test]
    fn grid_is_a_thirtieth_of_the_interval_within_1_to_3_ms() {
        assert_eq!(grid_for(Duration::from_millis(1)), Duration::from_millis(1));
        assert_eq!(
            grid_for(Duration::from_millis(60)),
            Duration::from_millis(2)
        );
        assert_eq!(
            grid_for(Duration::from_millis(100)),
            Duration::from_millis(3)
        );
        assert_eq!(grid_for(Duration::from_secs(1)), Duration::from_millis(3));
    }

    #[tokio::test(start_paused = true)]
    async fn ticks_come_once_each_in_order_and_late_ticks_push_the_schedule_back() {
        let mut cx = Context::from_waker(noop_waker_ref());
        let interval = Duration::from_millis(100);
        let mut c = Counter::new(CounterPlan {
            first: 2,
            count: 3,
            interval,
        });
        let start = Instant::now();
        assert_eq!(c.poll_due(start, &mut cx), Due::At(start + interval));
        let f = c.next_frame(start + interval);
        assert!(f.starts_with(b"id: 2\n"), "{f:?}");
        assert_eq!(c.last_id(), 2);
        // Read 250 ms late: the next tick is one interval after that, not at once.
        let late = start + interval * 2 + Duration::from_millis(250);
        assert_eq!(c.poll_due(late, &mut cx), Due::Ready);
        let f = c.next_frame(late);
        assert!(f.starts_with(b"id: 3\n"), "{f:?}");
        assert_eq!(c.poll_due(late, &mut cx), Due::Complete);
    }
}
