//! Ring walks under a table's eligibility flags: primary and backup placement.
use super::Router;
use crate::Refusal;
use std::sync::atomic::Ordering;

impl Router {
    /// First ring node from `point` taking new sessions, not `chosen` nor in `exclude`.
    pub(super) fn backup_after(
        &self,
        point: u32,
        chosen: usize,
        exclude: &[usize],
    ) -> Option<usize> {
        let chosen_counted = self.takes_new(chosen) && !exclude.contains(&chosen);
        if self.available(exclude) <= usize::from(chosen_counted) {
            return None;
        }
        self.ring
            .walk(point)
            .find(|&i| i != chosen && !exclude.contains(&i) && self.takes_new(i))
    }

    /// The first ring node from `point` that takes new sessions, is not in `exclude` and —
    /// when `limited` and the upstream limits load — fits (below its cap and the load bound),
    /// with the next distinct node taking new sessions as backup: (primary, backup).
    /// When no node fits the bound but some are below their caps (the bound is exceeded only
    /// by concurrent placements or caps), the first of those; when all are at their caps,
    /// `Full`.
    pub(super) fn pick(
        &self,
        point: u32,
        exclude: &[usize],
        limited: bool,
    ) -> Result<(usize, Option<usize>), Refusal> {
        let avail = self.available(exclude);
        if avail == 0 {
            return Err(Refusal::NoBackend);
        }
        let eligible = || {
            self.ring
                .walk(point)
                .filter(|&i| !exclude.contains(&i) && self.takes_new(i))
        };
        if !(limited && self.limited) {
            let mut it = eligible();
            let first = it.next().ok_or(Refusal::NoBackend)?;
            return Ok((first, if avail > 1 { it.next() } else { None }));
        }
        let totals = self.totals();
        // One walk finds the primary (the first node that fits) and the backup (the first
        // other node taking new sessions: one passed over for load, or the next one after).
        let mut passed = None;
        let mut it = eligible();
        for i in it.by_ref() {
            if self.fits(i, totals) {
                let backup = passed.or_else(|| if avail > 1 { it.next() } else { None });
                return Ok((i, backup));
            }
            passed = passed.or(Some(i));
        }
        let first = eligible()
            .find(|&i| self.under_cap(i))
            .ok_or(Refusal::Full)?;
        Ok((first, self.backup_after(point, first, exclude)))
    }

    /// Backends taking new sessions outside `exclude` (by the counter; may lag a concurrent
    /// flag change by a moment).
    fn available(&self, exclude: &[usize]) -> usize {
        let excluded = exclude
            .iter()
            .enumerate()
            .filter(|&(n, &i)| i < self.len() && self.takes_new(i) && !exclude[..n].contains(&i))
            .count();
        self.takes_new
            .load(Ordering::Acquire)
            .saturating_sub(excluded)
    }

    /// Last resort: the first up backend not in `exclude`, ring order then off-ring ones.
    pub(super) fn any_up(&self, point: u32, exclude: &[usize]) -> Option<usize> {
        self.ring
            .walk(point)
            .chain(self.off_ring.iter().copied())
            .find(|&i| !exclude.contains(&i) && self.is_up(i))
    }
}
