//! Request policy, in one typed place: what one request may still try ([`Attempt`]: its
//! routing decision, the backends that failed, its retry budget, the retry rule) and every
//! answer Berth gives a client itself instead of a backend's ([`Answer`]: status,
//! `Retry-After` and body). The proxy's hooks only ask these types; the upstream fills an
//! attempt in (`upstream`).
mod answer;
mod attempt;

pub use answer::{Answer, Limit};
pub use attempt::{AfterError, Attempt};
