//! The runner's (e) path: sessions without a key, placed by load, pinned when their token comes
//! back; crawler requests that never come back.
use super::*;

impl Runner<'_> {
    /// (e): placed by load; nothing pinned or active until the session comes back.
    pub(super) fn arrive_keyless(&mut self, sid: u32, t: u64, now_s: u32) {
        let a = self.active_total();
        let bits = rng::draw(self.seed ^ 0x006B_6579_6C65_7373, u64::from(sid), 0);
        let start = Instant::now();
        let d = self.table.router.select_keyless(bits, t);
        self.out.place_ns.add(start.elapsed().as_nanos() as u64);
        let Ok(d) = d else {
            self.out
                .mismatch(|| format!("session {sid} refused: {d:?}"));
            return;
        };
        if d.reason != Reason::New {
            self.out
                .mismatch(|| format!("session {sid} arrived: {d:?}"));
        }
        self.out.placements += 1;
        let idx = d.backend;
        let b = self.table.ids[idx];
        let w = u64::from(self.table.router.weight(idx));
        let load = u64::from(self.shadow[b as usize]);
        let late = now_s >= self.p.warmup_s;
        if !below_bound(load, a, w, self.table.weight, self.p.eps_milli) {
            self.out.over_bound += 1;
            self.out.over_bound_late += u64::from(late);
            if self.out.first_over_bound.is_none() {
                self.out.first_over_bound = Some(format!(
                    "t={now_s}s session {sid} → {} at load {load} (A={a})",
                    self.table.router.name(idx)
                ));
            }
        }
        let s = &mut self.sess[sid as usize];
        s.backend = b;
        s.untracked = 1;
        if self.p.back_at_once {
            // The browser's next request, before anything else happens: the session exists.
            let name = self.table.router.name(idx).to_string();
            match self.table.router.select_named(&name, key(sid), t) {
                Ok(d) if d.backend == idx && d.reason == Reason::Sticky => {
                    self.sess[sid as usize].returned = true;
                    self.out.returned += 1;
                    self.touch(sid, now_s);
                }
                other => self
                    .out
                    .mismatch(|| format!("session {sid} back at once: {other:?}")),
            }
        }
        self.crawl(sid, t);
        if late {
            // The placement signal (active + pending) of the chosen backend over its mean.
            let r = &self.table.router;
            let total: u64 = (0..r.len())
                .filter(|&i| r.takes_new(i))
                .map(|i| r.keyless_load(i))
                .sum();
            let mean = total as f64 * w as f64 / self.table.weight.max(1) as f64;
            let after = r.keyless_load(idx) as f64;
            self.out.placed.add(after / mean);
            let eps = 1.0 + f64::from(self.p.eps_milli) / 1000.0;
            self.out.placed_excess = self.out.placed_excess.max(after - eps * mean);
            self.out.placed_table.add(after / mean);
        }
    }

    /// (e): the crawler requests that come with session `sid`'s arrival: keyless placements
    /// that never come back.
    pub(super) fn crawl(&mut self, sid: u32, t: u64) {
        let x = self.p.crawlers.max(0.0);
        let frac = rng::unit(rng::draw(self.seed ^ 0xC4A3_1E45, u64::from(sid), 0));
        let n = x.floor() as u64 + u64::from(frac < x.fract());
        for c in 0..n {
            let bits = rng::draw(self.seed ^ 0xC4A3_1E45, u64::from(sid), c + 1);
            if self.table.router.select_keyless(bits, t).is_ok() {
                self.out.crawls += 1;
            }
        }
    }

    /// (e): a request with the session's token (naming its backend); the first one pins it.
    pub(super) fn request_keyless(&mut self, sid: u32, t: u64) {
        let now_s = (t / 1000) as u32;
        let k = key(sid);
        let a = self.active_total();
        let s = self.sess[sid as usize];
        let Some(name) = self.names.name(berth_routing::BackendId(s.backend)) else {
            self.out
                .mismatch(|| format!("session {sid}: backend {} has no name", s.backend));
            return;
        };
        let start = Instant::now();
        let d = self.table.router.select_named(&name, k, t);
        if s.returned {
            self.out.hit_ns.add(start.elapsed().as_nanos() as u64);
        }
        let Ok(d) = d else {
            self.out
                .mismatch(|| format!("session {sid} refused: {d:?}"));
            return;
        };
        if !s.returned {
            self.sess[sid as usize].returned = true;
            self.out.returned += 1;
        }
        if self.table.ids[d.backend] == s.backend {
            if d.reason != Reason::Sticky {
                self.out
                    .unexpected_move(|| format!("t={now_s}s session {sid}: {d:?}"));
            }
            self.touch(sid, now_s);
            return;
        }
        self.moved(sid, s.backend, d, a, now_s);
    }
}
