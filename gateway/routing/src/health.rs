//! Backend health as a pure state machine: rise/fall thresholds over check results.
//!
//! ```
//! use berth_routing::{HealthState, Thresholds};
//! let t = Thresholds { rise: 2, fall: 2 };
//! let mut h = HealthState::up();
//! assert_eq!(h.observe(false, t), None);        // one failure: still up
//! assert_eq!(h.observe(false, t), Some(false)); // second: down
//! assert_eq!(h.observe(true, t), None);
//! assert_eq!(h.observe(true, t), Some(true));   // back up after `rise` successes
//! ```

/// Consecutive results needed to change state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// Successes that bring a down backend up.
    pub rise: u32,
    /// Failures that bring an up backend down.
    pub fall: u32,
}

/// Up/down plus the current streak of results that disagree with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthState {
    up: bool,
    streak: u32,
}

impl HealthState {
    /// A backend considered up (new backends start up, as in HAProxy and Pingora).
    pub fn up() -> Self {
        HealthState {
            up: true,
            streak: 0,
        }
    }

    /// A backend considered down.
    pub fn down() -> Self {
        HealthState {
            up: false,
            streak: 0,
        }
    }

    /// Current state.
    pub fn is_up(&self) -> bool {
        self.up
    }

    /// Record one result; returns the new state when it changed.
    pub fn observe(&mut self, ok: bool, t: Thresholds) -> Option<bool> {
        if ok == self.up {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if self.up { t.fall } else { t.rise }.max(1);
        if self.streak >= needed {
            self.up = ok;
            self.streak = 0;
            Some(ok)
        } else {
            None
        }
    }

    /// Force a state (passive marking, cooldown expiry); returns whether it changed.
    pub fn set(&mut self, up: bool) -> bool {
        let changed = self.up != up;
        *self = if up { Self::up() } else { Self::down() };
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Thresholds = Thresholds { rise: 3, fall: 2 };

    #[test]
    fn needs_consecutive_results() {
        let mut h = HealthState::up();
        assert_eq!(h.observe(false, T), None);
        assert_eq!(
            h.observe(true, T),
            None,
            "a success resets the failure streak"
        );
        assert_eq!(h.observe(false, T), None);
        assert_eq!(h.observe(false, T), Some(false));
        assert!(!h.is_up());
        assert_eq!(h.observe(true, T), None);
        assert_eq!(h.observe(true, T), None);
        assert_eq!(
            h.observe(false, T),
            None,
            "a failure resets the success streak"
        );
        for _ in 0..2 {
            assert_eq!(h.observe(true, T), None);
        }
        assert_eq!(h.observe(true, T), Some(true));
        assert!(h.is_up());
    }

    #[test]
    fn zero_thresholds_act_as_one() {
        let t = Thresholds { rise: 0, fall: 0 };
        let mut h = HealthState::up();
        assert_eq!(h.observe(false, t), Some(false));
        assert_eq!(h.observe(true, t), Some(true));
    }

    #[test]
    fn set_reports_changes_and_resets_streaks() {
        let mut h = HealthState::up();
        assert_eq!(h.observe(false, T), None);
        assert!(h.set(false));
        assert!(!h.set(false));
        assert_eq!(h.observe(true, T), None);
        assert!(h.set(true));
        assert_eq!(h.observe(false, T), None, "streak was reset by set");
    }
}
