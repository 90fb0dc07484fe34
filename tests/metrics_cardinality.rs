//! Bounded metric cardinality: campaigns beyond `metrics.max_campaign_series`
//! fold into `campaign="_other"` (their journey steps into `step="_other"`);
//! an ended campaign's series are removed after
//! the grace period.

use std::time::{Duration, Instant};

use wadispatch::metrics;

/// The only test of this binary: it owns the process-wide label table.
#[test]
fn campaigns_beyond_the_cap_fold_and_ended_ones_are_removed_after_grace() {
    metrics::configure_campaigns(2, Duration::from_secs(60));
    metrics::dispatch("cap-a", "primary", "1001", "accepted");
    metrics::dispatch("cap-b", "primary", "1001", "accepted");
    metrics::dispatch("cap-c", "primary", "1001", "accepted");
    metrics::dispatch("cap-d", "primary", "1001", "accepted");
    metrics::campaign_pending("cap-c", 5); // folded: no gauge
    let text = metrics::metrics().render();
    assert!(text.contains(r#"campaign="cap-a""#), "{text}");
    assert!(text.contains(r#"campaign="cap-b""#));
    assert!(!text.contains(r#"campaign="cap-c""#));
    assert!(!text.contains(r#"campaign="cap-d""#));
    assert!(text.contains(
        r#"wadispatch_dispatch_total{campaign="_other",sender="1001",status="accepted",step="_other"} 2"#
    ));
    assert!(text.contains(
        r#"wadispatch_dispatch_total{campaign="cap-a",sender="1001",status="accepted",step="primary"} 1"#
    ));

    // cap-a ends: its series stay for the grace period, then go, and its
    // place under the cap is free again.
    metrics::campaign_state("cap-a", wadispatch::domain::ObservedState::Ended);
    assert_eq!(metrics::sweep_campaigns(Instant::now()), 0);
    assert!(metrics::metrics().render().contains(r#"campaign="cap-a""#));
    assert_eq!(
        metrics::sweep_campaigns(Instant::now() + Duration::from_secs(61)),
        1
    );
    let text = metrics::metrics().render();
    assert!(!text.contains(r#"campaign="cap-a""#), "{text}");
    metrics::dispatch("cap-e", "primary", "1001", "accepted");
    assert!(metrics::metrics().render().contains(r#"campaign="cap-e""#));
    metrics::configure_campaigns(200, Duration::from_secs(3_600));
}
