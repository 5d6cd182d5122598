use super::*;

fn attempt(reason: Reason, previous: Option<u32>, invalid: bool) -> Attempt {
    Attempt {
        decision: Some(Decision {
            backend: 0,
            backup: None,
            reason,
            previous: previous.map(BackendId),
        }),
        invalid,
        ..Attempt::default()
    }
}

#[test]
fn outcomes() {
    let cases = [
        (attempt(Reason::Sticky, None, false), Some(Outcome::Hit)),
        (attempt(Reason::New, None, false), Some(Outcome::Miss)),
        (attempt(Reason::Ring, None, false), None),
        (
            attempt(Reason::Failover, Some(1), false),
            Some(Outcome::Reassigned),
        ),
        (
            attempt(Reason::Spill, None, false),
            Some(Outcome::Reassigned),
        ),
        (
            attempt(Reason::New, None, true),
            Some(Outcome::InvalidToken),
        ),
        (
            attempt(Reason::Ring, None, true),
            Some(Outcome::InvalidToken),
        ),
        // Another plugin's key kept the session: the rejection is not its outcome.
        (attempt(Reason::Sticky, None, true), Some(Outcome::Hit)),
        (
            attempt(Reason::Failover, Some(1), true),
            Some(Outcome::Reassigned),
        ),
        (Attempt::default(), None),
    ];
    for (r, want) in cases {
        assert_eq!(r.outcome(), want, "{r:?}");
    }
    let moved = Attempt {
        moved_from: Some(BackendId(2)),
        ..attempt(Reason::Sticky, None, false)
    };
    assert_eq!(moved.outcome(), Some(Outcome::Reassigned));
}

/// `proxy_failed` on an attempt with `failed` backends out of a budget of `budget`.
fn after(
    retriable: bool,
    reused: bool,
    retry: &RetryType,
    failed: usize,
    budget: usize,
) -> AfterError {
    let mut a = Attempt {
        budget,
        ..Attempt::default()
    };
    for b in 0..failed {
        a.failed.push(b);
    }
    a.proxy_failed(retriable, reused, retry)
}

#[test]
fn retry_rule_covers_every_retry_type_without_panicking() {
    use AfterError::*;
    let undecided = RetryType::ReusedOnly;
    let yes = RetryType::Decided(true);
    let no = RetryType::Decided(false);
    assert_eq!(after(false, true, &yes, 0, 2), GiveUp { not_retried: true });
    assert_eq!(after(true, true, &undecided, 0, 2), SameBackend);
    assert_eq!(after(true, true, &yes, 0, 2), SameBackend);
    assert_eq!(after(true, true, &no, 0, 2), NextBackend);
    assert_eq!(after(true, false, &undecided, 0, 2), NextBackend);
    assert_eq!(
        after(true, false, &undecided, 2, 2),
        GiveUp { not_retried: false }
    );
}

#[test]
fn one_budget_for_connect_failures_and_proxy_errors() {
    let mut a = Attempt {
        budget: 2,
        ..Attempt::default()
    };
    assert!(a.connect_failed() && a.retrying);
    a.failed.push(0);
    assert_eq!(
        a.proxy_failed(true, false, &RetryType::Decided(true)),
        AfterError::NextBackend
    );
    a.failed.push(1);
    assert!(!a.connect_failed(), "the budget is spent");
    let after = a.proxy_failed(true, false, &RetryType::Decided(true));
    assert_eq!(after, AfterError::GiveUp { not_retried: false });
    assert!(!a.not_retried);
    assert_eq!(
        a.proxy_failed(false, false, &RetryType::Decided(true)),
        AfterError::GiveUp { not_retried: true }
    );
    assert!(a.not_retried);
}
