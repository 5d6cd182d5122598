//! Ring walks under a table's eligibility flags: primary and backup placement.
use super::Router;
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

    /// The first two distinct ring nodes from `point` that take new sessions and are not in
    /// `exclude`: (primary, backup).
    pub(super) fn pick(&self, point: u32, exclude: &[usize]) -> Option<(usize, Option<usize>)> {
        let avail = self.available(exclude);
        if avail == 0 {
            return None;
        }
        let mut it = self
            .ring
            .walk(point)
            .filter(|&i| !exclude.contains(&i) && self.takes_new(i));
        let first = it.next()?;
        Some((first, if avail > 1 { it.next() } else { None }))
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
