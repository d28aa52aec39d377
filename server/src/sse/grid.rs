//! One timer for every stream of a runtime: deadlines rounded up to cells of a
//! millisecond grid, and one task per runtime that wakes each cell's streams together.
//!
//! A stream registers its task's waker in the cell of its next deadline; the grid's
//! task sleeps until the earliest cell that has any, then wakes them all. Many streams
//! thus cost one timer wake-up, and registering costs a map lookup and a push, where a
//! timer per stream (tokio's `Sleep`) costs a wheel entry reset and fired one by one.
// Bench: `cargo xtask bench` 1 Hz, CPU per event (user time, median of A/B runs).

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::runtime::{self, Handle};
use tokio::time::{Instant, Sleep};

/// A point on a grid: whole milliseconds (tokio's own timer resolution) since the
/// grid's origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Cell(u64);

/// Whole milliseconds, in u64 arithmetic (this runs for every event; u128 division is
/// slow, and u64 milliseconds last 584 million years).
fn millis(d: Duration) -> u64 {
    d.as_secs()
        .saturating_mul(1000)
        .saturating_add(u64::from(d.subsec_millis()))
}

/// The timer of one runtime's streams.
pub struct Grid {
    /// Cells count from here, in the runtime's clock (which tests may pause).
    origin: Instant,
    cells: Mutex<Cells>,
}

#[derive(Default)]
struct Cells {
    /// The wakers waiting for each cell.
    due: BTreeMap<Cell, Vec<Waker>>,
    /// The grid task's waker while it waits, and the cell it waits for (`None`: no
    /// cell has any waker).
    driver: Option<(Waker, Option<Cell>)>,
}

impl Grid {
    /// The grid of the runtime this is called on; made, with its task, on first use.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn current() -> Arc<Grid> {
        static GRIDS: Mutex<Vec<(runtime::Id, Weak<Grid>)>> = Mutex::new(Vec::new());
        let handle = Handle::current();
        let id = handle.id();
        let mut grids = GRIDS.lock().unwrap_or_else(PoisonError::into_inner);
        // A runtime that shut down dropped its grid's task, and with it the grid.
        grids.retain(|(_, grid)| grid.strong_count() > 0);
        if let Some(grid) = grids
            .iter()
            .find(|(rt, _)| *rt == id)
            .and_then(|(_, grid)| grid.upgrade())
        {
            return grid;
        }
        let grid = Arc::new(Grid {
            origin: Instant::now(),
            cells: Mutex::new(Cells::default()),
        });
        grids.push((id, Arc::downgrade(&grid)));
        handle.spawn(Driver::new(Arc::clone(&grid)));
        grid
    }

    /// The first cell that starts at or after `at`, rounded up to a multiple of `step`
    /// (less than a millisecond: no further rounding), so that streams with the same
    /// step fall in the same cells and wake together.
    fn cell_at_or_after(&self, at: Instant, step: Duration) -> Cell {
        let since = at.saturating_duration_since(self.origin);
        let ms = millis(since) + u64::from(since.subsec_nanos() % 1_000_000 != 0);
        let step = millis(step).max(1);
        Cell(ms.div_ceil(step).saturating_mul(step))
    }

    /// The last cell that started at or before `now`.
    fn cell_now(&self, now: Instant) -> Cell {
        Cell(millis(now.saturating_duration_since(self.origin)))
    }

    fn start_of(&self, cell: Cell) -> Instant {
        self.origin + Duration::from_millis(cell.0)
    }

    fn lock(&self) -> MutexGuard<'_, Cells> {
        // Every change is made in one step: a panic elsewhere leaves the cells whole.
        self.cells.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wakes `waker` once `cell` has started.
    fn add(&self, cell: Cell, waker: Waker) {
        let mut cells = self.lock();
        cells.due.entry(cell).or_default().push(waker);
        // The task sleeps until a later cell, or has none: it must wait for this one.
        let earlier = match &cells.driver {
            Some((_, at)) => at.is_none_or(|at| cell < at),
            None => false,
        };
        let driver = earlier.then(|| cells.driver.take()).flatten();
        drop(cells);
        if let Some((driver, _)) = driver {
            driver.wake();
        }
    }
}

/// The grid's task: sleeps until the earliest cell that has wakers, wakes them.
///
/// Two timers leapfrog over the two earliest cells: tokio wakes its timer driver (an
/// `eventfd` write) whenever a timer is set earlier than every other, which one timer
/// re-set after each cell always is. With two, the one re-set goes after the other.
// Bench: `cargo xtask bench` 1 Hz, `write(2)` calls per second (perf stat).
struct Driver {
    grid: Arc<Grid>,
    /// Each timer with the cell it is set for (`None`: for no cell that has wakers).
    sleeps: [(Pin<Box<Sleep>>, Option<Cell>); 2],
}

impl Driver {
    fn new(grid: Arc<Grid>) -> Driver {
        let sleep = || (Box::pin(tokio::time::sleep_until(Instant::now())), None);
        Driver {
            grid,
            sleeps: [sleep(), sleep()],
        }
    }
}

impl Future for Driver {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        loop {
            let now = this.grid.cell_now(Instant::now());
            let mut fired = Vec::new();
            let mut cells = this.grid.lock();
            while let Some(entry) = cells.due.first_entry() {
                if *entry.key() > now {
                    break;
                }
                fired.push(entry.remove());
            }
            let mut next = cells.due.keys().copied();
            let wanted = [next.next(), next.next()];
            cells.driver = Some((cx.waker().clone(), wanted[0]));
            drop(cells);
            for waker in fired.into_iter().flatten() {
                waker.wake();
            }
            // Keep the timers already set for a wanted cell; set the others, earliest
            // first.
            for (_, at) in &mut this.sleeps {
                if !wanted.contains(at) {
                    *at = None;
                }
            }
            for cell in wanted.into_iter().flatten() {
                if this.sleeps.iter().any(|(_, at)| *at == Some(cell)) {
                    continue;
                }
                if let Some((sleep, at)) = this.sleeps.iter_mut().find(|(_, at)| at.is_none()) {
                    sleep.as_mut().reset(this.grid.start_of(cell));
                    *at = Some(cell);
                }
            }
            let mut elapsed = false;
            for (sleep, at) in &mut this.sleeps {
                if at.is_some() && sleep.as_mut().poll(cx).is_ready() {
                    elapsed = true;
                }
            }
            if !elapsed {
                return Poll::Pending;
            }
        }
    }
}

/// One stream's place on its runtime's [`Grid`].
pub struct GridTimer {
    grid: Arc<Grid>,
    /// The cell this stream's waker was last added to, and that waker.
    armed: Option<(Cell, Waker)>,
}

impl GridTimer {
    /// A timer on the grid of the current runtime.
    pub fn new() -> GridTimer {
        GridTimer {
            grid: Grid::current(),
            armed: None,
        }
    }

    /// Ready once `now` is past `deadline` rounded up onto the grid (to a multiple of
    /// `step`); until then `cx` is woken at that point (or earlier, after which it
    /// asks again).
    pub fn poll_until(
        &mut self,
        deadline: Instant,
        step: Duration,
        now: Instant,
        cx: &mut Context<'_>,
    ) -> Poll<()> {
        let cell = self.grid.cell_at_or_after(deadline, step);
        let now = self.grid.cell_now(now);
        if cell <= now {
            return Poll::Ready(());
        }
        // Still waiting for a cell no later than this one, with this waker: that
        // wake-up comes first (a keep-alive moved later by each event is thus added
        // again once per period, not once per event).
        if let Some((armed, waker)) = &self.armed {
            if *armed > now && *armed <= cell && waker.will_wake(cx.waker()) {
                return Poll::Pending;
            }
        }
        self.grid.add(cell, cx.waker().clone());
        self.armed = Some((cell, cx.waker().clone()));
        Poll::Pending
    }
}

impl Default for GridTimer {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn cells_round_up_onto_the_step() {
        let grid = Grid::current();
        let o = grid.origin;
        let ms = Duration::from_millis;
        let at = |d, step| grid.cell_at_or_after(o + d, step);
        assert_eq!(at(ms(5), Duration::ZERO), Cell(5));
        assert_eq!(
            at(ms(5) + Duration::from_micros(1), Duration::ZERO),
            Cell(6)
        );
        assert_eq!(at(ms(4), ms(3)), Cell(6));
        assert_eq!(at(ms(6), ms(3)), Cell(6), "on the grid stays");
        assert_eq!(at(Duration::ZERO, ms(3)), Cell(0));
        assert_eq!(grid.cell_now(o + ms(6) - Duration::from_micros(1)), Cell(5));
        assert_eq!(grid.start_of(Cell(7)), o + ms(7));
        assert!(Arc::ptr_eq(&grid, &Grid::current()), "one grid per runtime");
    }

    #[tokio::test(start_paused = true)]
    async fn streams_wake_once_their_cell_has_started() {
        let start = Instant::now();
        let mut timers: Vec<GridTimer> = (0..3).map(|_| GridTimer::new()).collect();
        let deadlines = [
            Duration::from_millis(30),
            Duration::from_millis(10),
            Duration::from_millis(20),
        ];
        let mut order = Vec::new();
        let mut waiting: Vec<usize> = (0..3).collect();
        while !waiting.is_empty() {
            std::future::poll_fn(|cx| {
                let now = Instant::now();
                let before = waiting.len();
                waiting.retain(|&i| {
                    let deadline = start + deadlines[i];
                    if timers[i]
                        .poll_until(deadline, Duration::ZERO, now, cx)
                        .is_ready()
                    {
                        assert!(now >= start + deadlines[i], "never early");
                        order.push(i);
                        false
                    } else {
                        true
                    }
                });
                if waiting.len() < before || waiting.is_empty() {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            })
            .await;
        }
        assert_eq!(order, [1, 2, 0]);
        assert!(Instant::now() - start < Duration::from_millis(35));
    }
}
