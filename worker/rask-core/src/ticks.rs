//! How responsive an event loop is: a timer asks the loop to *tick* at a fixed interval, and the
//! time between two ticks is how long the loop could not get to it (Dask's
//! `Server._measure_tick`, exported as `*_tick_count_total` and
//! `*_tick_duration_maximum_seconds`).

use std::time::{Duration, Instant};

/// How often an event loop ticks (Dask's `distributed.admin.tick.interval`).
pub const TICK_INTERVAL: Duration = Duration::from_millis(20);

/// A tick later than this is logged: the loop was blocked (Dask's
/// `distributed.admin.tick.limit`).
const TICK_WARN_AFTER: Duration = Duration::from_secs(3);

/// One event loop's ticks: plain numbers, updated by the loop itself.
#[derive(Debug)]
pub struct Ticks {
    /// Whose loop it is, for the warning about a blocked loop.
    owner: &'static str,
    last: Instant,
    count: u64,
    /// The longest time between two ticks since the last [`Ticks::scraped`].
    longest: Duration,
}

impl Ticks {
    pub fn new(owner: &'static str, now: Instant) -> Self {
        Ticks {
            owner,
            last: now,
            count: 0,
            longest: Duration::ZERO,
        }
    }

    /// The timer fired and the loop got to it at `now`.
    pub fn tick(&mut self, now: Instant) {
        let gap = now.saturating_duration_since(self.last);
        self.last = now;
        self.count += 1;
        self.longest = self.longest.max(gap);
        if gap > TICK_WARN_AFTER {
            tracing::warn!(
                seconds = gap.as_secs_f64(),
                "the {}'s event loop was unresponsive",
                self.owner
            );
        }
    }

    /// Ticks since the loop started.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The longest gap since the last scrape, including the one still open at `now` (a loop
    /// blocked right now shows).
    pub fn longest(&self, now: Instant) -> Duration {
        self.longest.max(now.saturating_duration_since(self.last))
    }

    /// A scrape read the longest gap: start measuring the next one.
    pub fn scraped(&mut self) {
        self.longest = Duration::ZERO;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_count_and_keep_the_longest_gap_until_scraped() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut ticks = Ticks::new("test", t0);
        ticks.tick(t0 + ms(20));
        ticks.tick(t0 + ms(520));
        ticks.tick(t0 + ms(540));
        assert_eq!(ticks.count(), 3);
        assert_eq!(ticks.longest(t0 + ms(545)), ms(500));

        ticks.scraped();
        assert_eq!(ticks.count(), 3);
        assert_eq!(ticks.longest(t0 + ms(550)), ms(10));
        // A loop blocked right now shows before its next tick.
        assert_eq!(ticks.longest(t0 + ms(2540)), ms(2000));
        // A clock read before the last tick counts as no gap.
        assert_eq!(ticks.longest(t0), Duration::ZERO);
    }
}
