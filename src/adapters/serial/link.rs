//! Supervision of one serial port, pure: what the adapter should do and say
//! when the port opens, fails to open, delivers bytes, goes quiet or goes
//! away. No I/O and no clock: the caller passes `now`.
//!
//! Why a state machine of its own: a serial line has no link layer. A
//! monitor that is switched off, a null-modem cable pulled out and a monitor
//! whose serial output is disabled all look the same: no bytes. The only
//! signals are the device node (a USB-serial adapter unplugged makes reads
//! fail and the node disappear; udev recreates it on replug) and time. So:
//!
//! - **port**: opened -> `connecting`; bytes -> `streaming` with a `connected`
//!   device event; a read error or end of file -> `lost` with a
//!   `disconnected` event (only if it was streaming) and a reopen with capped
//!   exponential backoff (0.5 s doubling up to `reopen_max`); the backoff
//!   restarts only once bytes arrive again, so a port that opens and fails at
//!   once is not hammered;
//! - **quiet-time watchdog**: no bytes for `quiet_timeout` while streaming ->
//!   `lost` with a `silent` event (so the cloud sees an explained gap), until
//!   bytes arrive again (`connected`). The port stays open (closing it would
//!   toggle DTR, which resets some devices); the adapter resends its init
//!   bytes at every quiet timeout, for a monitor that was switched off and on;
//! - **logs**: one line per episode: when the port goes away or cannot be
//!   opened (warn) and when it is back (info); when the monitor goes quiet
//!   (warn) and when it talks again (info). Never a line per retry.
//!
//! The same events as the BLE adapter ([`DeviceEvent::Connected`],
//! [`DeviceEvent::Disconnected`], [`DeviceEvent::Silent`]) and the same
//! registry states, so `iomt-edge status`, the status file and the twin show
//! serial devices like BLE ones.

use crate::adapters::LinkState;
use crate::backoff::Backoff;
use crate::logging::Episode;
use crate::model::DeviceEvent;
use std::time::{Duration, Instant};

/// The first reopen delay; it doubles up to `reopen_max`.
pub(crate) const BACKOFF_START: Duration = Duration::from_millis(500);

/// What the adapter must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// Send this device-link event as a reading.
    Event(DeviceEvent),
    /// Set the device's state in the registry.
    State(LinkState),
    /// Log at warn (one line for an episode that starts).
    Warn(String),
    /// Log at info (an episode ends).
    Info(String),
}

/// Supervision state of one port. `port` is how logs name it (the path is
/// not patient data).
#[derive(Debug, Clone)]
pub(crate) struct Link {
    port: String,
    quiet: Duration,
    /// The reopen delays (its `max` is the configured `reopen_max`).
    backoff: Backoff,
    /// `Some(since)` while the port is open: the time the quiet timer runs from.
    open_since: Option<Instant>,
    streaming: bool,
    /// Open from when the port went away or could not be opened (logged)
    /// until it opens again.
    away: Episode,
    failed_opens: u32,
    /// Open from a logged quiet time until something arrives.
    quiet_time: Episode,
}

impl Link {
    /// `quiet`: the watchdog's timeout; `backoff_max`: the reopen backoff's cap.
    pub(crate) fn new(port: &str, quiet: Duration, backoff_max: Duration) -> Link {
        Link {
            port: port.to_string(),
            quiet,
            backoff: Backoff::new(BACKOFF_START, backoff_max.max(BACKOFF_START)),
            open_since: None,
            streaming: false,
            away: Episode::default(),
            failed_opens: 0,
            quiet_time: Episode::default(),
        }
    }

    /// The port opened.
    pub(crate) fn opened(&mut self, now: Instant) -> Vec<Step> {
        let mut steps = vec![State(LinkState::Connecting)];
        if self.away.end().is_some() {
            steps.push(Info(format!("serial port {} is open again (after {} failed attempt(s)); waiting for data", self.port, self.failed_opens)));
        }
        self.failed_opens = 0;
        self.open_since = Some(now);
        steps
    }

    /// Opening failed (`why`: the system's error). Returns the steps and how
    /// long to wait before the next attempt.
    pub(crate) fn open_failed(&mut self, why: &str) -> (Vec<Step>, Duration) {
        let mut steps = Vec::new();
        self.failed_opens += 1;
        if self.away.occurred() {
            steps.push(Warn(format!(
                "cannot open serial port {} ({why}); retrying with backoff up to {:?} (logged once until it opens)",
                self.port,
                self.backoff.max()
            )));
        }
        (steps, self.next_delay())
    }

    /// The open port failed (read error, end of file: the device node went
    /// away). Returns the steps and the delay before reopening.
    pub(crate) fn lost(&mut self, why: &str) -> (Vec<Step>, Duration) {
        let mut steps = Vec::new();
        if self.streaming {
            steps.push(Event(DeviceEvent::Disconnected));
        }
        steps.push(State(LinkState::Lost));
        if self.away.occurred() {
            steps.push(Warn(format!(
                "serial port {} went away ({why}); reopening with backoff up to {:?} (logged once until it is back)",
                self.port,
                self.backoff.max()
            )));
        }
        self.streaming = false;
        self.open_since = None;
        (steps, self.next_delay())
    }

    /// Bytes arrived.
    pub(crate) fn data(&mut self, now: Instant) -> Vec<Step> {
        self.open_since = Some(now);
        self.backoff.reset();
        if self.streaming {
            return Vec::new();
        }
        self.streaming = true;
        let mut steps = vec![Event(DeviceEvent::Connected), State(LinkState::Streaming)];
        if self.quiet_time.end().is_some() {
            steps.push(Info(format!("the monitor on serial port {} sends data again", self.port)));
        }
        steps
    }

    /// When the quiet timer fires, if the port is open.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.open_since.map(|t| t + self.quiet)
    }

    /// The quiet timer fired (`now` >= [`Link::deadline`]). The timer restarts
    /// from `now`; the adapter resends its init bytes.
    pub(crate) fn quiet(&mut self, now: Instant) -> Vec<Step> {
        let mut steps = Vec::new();
        if self.open_since.is_none() {
            return steps;
        }
        self.open_since = Some(now);
        if self.streaming {
            self.streaming = false;
            steps.push(Event(DeviceEvent::Silent));
        }
        steps.push(State(LinkState::Lost));
        if self.quiet_time.occurred() {
            steps.push(Warn(format!(
                "nothing received on serial port {} for {:?}: is the monitor on, connected, and its serial output enabled at the \
                 configured speed? (logged once until it sends data)",
                self.port, self.quiet
            )));
        }
        steps
    }

    fn next_delay(&mut self) -> Duration {
        self.backoff.next_delay()
    }
}

use Step::{Event, Info, State, Warn};

#[cfg(test)]
mod tests {
    use super::*;

    fn events(steps: &[Step]) -> Vec<DeviceEvent> {
        steps.iter().filter_map(|s| if let Event(e) = s { Some(*e) } else { None }).collect()
    }

    fn logs(steps: &[Step]) -> usize {
        steps.iter().filter(|s| matches!(s, Warn(_) | Info(_))).count()
    }

    /// Port opens, streams, goes quiet, streams again, disappears, fails to
    /// reopen a few times, comes back: the events explain every gap, and each
    /// episode is logged once when it starts and once when it ends.
    #[test]
    fn a_whole_life() {
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_millis(n);
        let mut l = Link::new("/dev/ttyUSB0", Duration::from_secs(5), Duration::from_secs(4));
        assert_eq!(l.deadline(), None);
        let st = l.opened(s(0));
        assert_eq!(st, vec![State(LinkState::Connecting)]);
        assert_eq!(l.deadline(), Some(s(5000)));
        let st = l.data(s(100));
        assert_eq!(st, vec![Event(DeviceEvent::Connected), State(LinkState::Streaming)]);
        assert!(l.data(s(1100)).is_empty(), "nothing to do while streaming");
        assert_eq!(l.deadline(), Some(s(6100)), "the quiet timer runs from the last bytes");
        // Quiet.
        let st = l.quiet(s(6100));
        assert_eq!(events(&st), vec![DeviceEvent::Silent]);
        assert!(st.contains(&State(LinkState::Lost)));
        assert_eq!(logs(&st), 1);
        let st = l.quiet(s(11_100));
        assert!(events(&st).is_empty() && logs(&st) == 0, "a second quiet period in the same episode: no event, no log: {st:?}");
        assert_eq!(l.deadline(), Some(s(16_100)));
        // Talks again.
        let st = l.data(s(12_000));
        assert_eq!(events(&st), vec![DeviceEvent::Connected]);
        assert!(matches!(st.last(), Some(Info(m)) if m.contains("sends data again")));
        // Port disappears; reopen fails 4 times; backoff doubles to its cap.
        let (st, d) = l.lost("end of file");
        assert_eq!(events(&st), vec![DeviceEvent::Disconnected]);
        assert_eq!(logs(&st), 1);
        assert_eq!(d, Duration::from_millis(500));
        assert_eq!(l.deadline(), None, "no quiet timer without a port");
        let mut delays = Vec::new();
        for _ in 0..4 {
            let (st, d) = l.open_failed("No such file or directory");
            assert_eq!(logs(&st), 0, "still the same episode: {st:?}");
            delays.push(d.as_millis());
        }
        assert_eq!(delays, vec![1000, 2000, 4000, 4000]);
        let st = l.opened(s(30_000));
        assert!(matches!(st.last(), Some(Info(m)) if m.contains("open again") && m.contains("4 failed")), "{st:?}");
        assert!(events(&st).is_empty(), "an open port is not yet a talking monitor");
        // Open but the node goes away at once: not streaming, so no event; the
        // backoff did not restart (no bytes came), so it is not hammered.
        let (st, d) = l.lost("I/O error");
        assert!(events(&st).is_empty());
        assert_eq!(logs(&st), 1);
        assert_eq!(d.as_millis(), 4000);
        l.opened(s(40_000));
        l.data(s(40_001));
        let (_, d) = l.lost("end of file");
        assert_eq!(d.as_millis(), 500, "bytes restart the backoff");
    }

    /// A port that never opens is logged once, however long it stays away.
    #[test]
    fn a_missing_port_is_logged_once() {
        let mut l = Link::new("/dev/serial/by-id/x", Duration::from_secs(5), Duration::from_secs(30));
        let n: usize = (0..100).map(|_| logs(&l.open_failed("No such file or directory").0)).sum();
        assert_eq!(n, 1);
    }

    /// A monitor that never sends anything after the port opens: one warning,
    /// state lost, no device event (nothing was connected).
    #[test]
    fn silence_from_the_start() {
        let t0 = Instant::now();
        let mut l = Link::new("p", Duration::from_secs(1), Duration::from_secs(30));
        l.opened(t0);
        let st = l.quiet(t0 + Duration::from_secs(1));
        assert!(events(&st).is_empty());
        assert_eq!(logs(&st), 1);
        assert!(st.contains(&State(LinkState::Lost)));
        assert!(l.quiet(t0 + Duration::from_secs(2)).iter().all(|s| matches!(s, State(_))));
    }
}
