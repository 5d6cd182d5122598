//! The ordered plugins of one upstream, asked in turn; a plugin that panics is caught here.
use crate::{Affinity, AffinityPlugin, DecisionView, Invalid, KeyOutcome, RequestView};
use crate::{ResponseView, SessionKey};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// The result of running a chain on one request.
#[derive(Debug, Clone, Copy, Default)]
pub struct ChainResult<'r> {
    /// The key, when a plugin found one.
    pub affinity: Option<Affinity<'r>>,
    /// Index of the plugin that found it.
    pub decided_by: Option<usize>,
    /// The last rejection seen on the way (plugin index, why), for counting.
    pub invalid: Option<(usize, Invalid)>,
    /// The last plugin that panicked on the way (its index), for counting. A panicking
    /// plugin counts as one that found nothing: the next one is asked.
    pub panicked: Option<usize>,
}

impl ChainResult<'_> {
    /// The expiry of the deciding token, for [`DecisionView::key_expires`].
    pub fn key_expires(&self) -> Option<u64> {
        self.affinity.as_ref().and_then(Affinity::expires)
    }
}

/// The ordered affinity plugins of one upstream.
///
/// ```
/// use berth_plugins::{Affinity, Chain, Registry};
/// use berth_plugins::testing::FakeRequest;
/// let registry = Registry::builtin();
/// let header = registry.build_str("type: header\nname: X-Session-Id", "app").unwrap();
/// let ip = registry.build_str("type: ip", "app").unwrap();
/// let chain = Chain::new(vec![header, ip]);
/// let req = FakeRequest::new().header("x-session-id", "abc");
/// let found = chain.key(&req);
/// assert!(matches!(found.affinity, Some(Affinity::Session(_))));
/// assert_eq!(found.decided_by, Some(0));
/// let req = FakeRequest::new().client("10.0.0.1");
/// let found = chain.key(&req);
/// assert_eq!(found.decided_by, Some(1));
/// ```
#[derive(Debug)]
pub struct Chain {
    plugins: Vec<Box<dyn AffinityPlugin>>,
    /// Some plugin's [`AffinityPlugin::sees_responses`].
    sees_responses: bool,
}

impl Chain {
    /// A chain asking `plugins` in this order.
    pub fn new(plugins: Vec<Box<dyn AffinityPlugin>>) -> Self {
        let sees_responses = plugins.iter().any(|p| p.sees_responses());
        Chain {
            plugins,
            sees_responses,
        }
    }

    /// Whether [`Chain::on_response`] can do anything: false when no plugin has a response
    /// hook (e.g. only `header` and `ip` plugins), so the gateway can skip it.
    pub fn sees_responses(&self) -> bool {
        self.sees_responses
    }

    /// The plugins, in order.
    pub fn plugins(&self) -> &[Box<dyn AffinityPlugin>] {
        &self.plugins
    }

    /// True when a plugin of the chain issues sessions itself (see
    /// [`AffinityPlugin::issues_sessions`]).
    pub fn issues_sessions(&self) -> bool {
        self.plugins.iter().any(|p| p.issues_sessions())
    }

    /// Ask each plugin in order; the first key wins. A plugin that panics is caught (the
    /// panic is reported in [`ChainResult::panicked`]) and treated as having found nothing.
    pub fn key<'r>(&self, req: &'r dyn RequestView) -> ChainResult<'r> {
        let mut out = ChainResult::default();
        for (i, p) in self.plugins.iter().enumerate() {
            match catch_unwind(AssertUnwindSafe(|| p.key(req))) {
                Ok(KeyOutcome::Key(a)) => {
                    out.affinity = Some(a);
                    out.decided_by = Some(i);
                    return out;
                }
                Ok(KeyOutcome::Skip) => {}
                Ok(KeyOutcome::Invalid(why)) => out.invalid = Some((i, why)),
                Err(_) => out.panicked = Some(i),
            }
        }
        out
    }

    /// Let every plugin see the response; calls `pin` with the session keys to pin to
    /// `d.backend` (learn mode). `d.decided_by_me` is ignored and set per plugin from
    /// `decided_by`; `d.key_expires` is shown to the deciding plugin only. A plugin that
    /// panics is caught, `panicked` is called with its index, and the others still run.
    pub fn on_response(
        &self,
        d: &DecisionView<'_>,
        decided_by: Option<usize>,
        resp: &mut dyn ResponseView,
        mut pin: impl FnMut(SessionKey, bool),
        mut panicked: impl FnMut(usize),
    ) {
        for (i, p) in self.plugins.iter().enumerate() {
            let mine = decided_by == Some(i);
            let view = DecisionView {
                decided_by_me: mine,
                key_expires: if mine { d.key_expires } else { None },
                ..*d
            };
            match catch_unwind(AssertUnwindSafe(|| p.on_response(&view, resp))) {
                Ok(Some(k)) => pin(k, mine),
                Ok(None) => {}
                Err(_) => panicked(i),
            }
        }
    }
}

#[cfg(test)]
#[path = "chain_tests.rs"]
mod tests;
