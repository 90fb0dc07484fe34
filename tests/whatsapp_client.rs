//! The Cloud API client against the sandbox simulator over real HTTP:
//! success, each error class, limits, and the never-sent / unknown split.

use std::time::Duration;

use wadispatch::domain::{ContactKey, ErrorClass};
use wadispatch::sandbox::{FailureRule, FailureStage, Sandbox, SandboxConfig};
use wadispatch::whatsapp::client::{ClientSettings, SendResult, WhatsAppClient};
use wadispatch::whatsapp::payload::{callback_data, template_message};

const SENDER: &str = "106540352242922";

fn client(base: &str, request_timeout: Duration) -> WhatsAppClient {
    WhatsAppClient::new(ClientSettings {
        base_url: base.to_string(),
        api_version: "v23.0".into(),
        token: Some("sandbox-token".into()),
        connect_timeout: Duration::from_millis(500),
        request_timeout,
        max_idle_per_host: 8,
    })
    .unwrap()
}

fn body(to: &str, campaign: &str) -> serde_json::Value {
    let spec = wadispatch::domain::CampaignSpec::from_json(wadispatch::demo::PROMO_SPEC.as_bytes())
        .unwrap();
    let compiled = spec.template.compile().unwrap();
    let record = wadispatch::domain::AudienceRecord::from_json(
        format!(r#"{{"campaign_id":"{campaign}","contact":{{"phone":"{to}","name":"Ana"}},"variables":{{"name":"Ana","discount":"20%","coupon":"ANA20"}}}}"#).as_bytes(),
    )
    .unwrap();
    let contact = ContactKey::parse_id(to, None).unwrap();
    let params = compiled.freeze(&record, &contact).unwrap();
    template_message(
        &spec.template,
        &contact,
        &params,
        &callback_data(campaign, &contact),
    )
}

fn api_rules() -> Vec<FailureRule> {
    [
        (11, 131026),
        (22, 132000),
        (33, 132001),
        (44, 190),
        (55, 131049),
        (66, 131000),
    ]
    .into_iter()
    .map(|(suffix, code)| FailureRule {
        suffix: suffix.to_string(),
        code,
        stage: FailureStage::Api,
    })
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn success_and_every_error_class() {
    let sandbox = Sandbox::start(SandboxConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        failure_rules: api_rules(),
        ..SandboxConfig::default()
    })
    .await
    .unwrap();
    let c = client(&sandbox.base_url(), Duration::from_secs(5));
    match c.send(SENDER, &body("+525512345600", "c1")).await {
        SendResult::Accepted { wamid, .. } => assert!(wamid.starts_with("wamid.")),
        other => panic!("expected accepted, got {other:?}"),
    }
    let expect = [
        ("+525512345611", ErrorClass::Contact, 131026),
        ("+525512345622", ErrorClass::Data, 132000),
        ("+525512345633", ErrorClass::Campaign, 132001),
        ("+525512345644", ErrorClass::Sender, 190),
        ("+525512345655", ErrorClass::Deferred, 131049),
        ("+525512345666", ErrorClass::Transient, 131000),
    ];
    for (to, class, code) in expect {
        match c.send(SENDER, &body(to, "c1")).await {
            SendResult::Rejected {
                error, class: got, ..
            } => {
                assert_eq!((got, error.code), (class, Some(code)), "{to}");
            }
            other => panic!("{to}: expected rejected, got {other:?}"),
        }
    }
    assert_eq!(sandbox.stats().accepted, 1);
    sandbox.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_limits_surface_as_throttled() {
    let sandbox = Sandbox::start(SandboxConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        per_number_mps: 5.0,
        pair_burst: 1,
        ..SandboxConfig::default()
    })
    .await
    .unwrap();
    let c = client(&sandbox.base_url(), Duration::from_secs(5));
    // Same recipient twice at once: the pair limit (131056).
    assert!(matches!(
        c.send(SENDER, &body("+525512340001", "c1")).await,
        SendResult::Accepted { .. }
    ));
    match c.send(SENDER, &body("+525512340001", "c1")).await {
        SendResult::Rejected { error, class, .. } => {
            assert_eq!((class, error.code), (ErrorClass::Throttled, Some(131056)))
        }
        other => panic!("expected 131056, got {other:?}"),
    }
    // Far over 5 messages/s to distinct recipients: 130429.
    let mut throttled = 0;
    let mut accepted = 0;
    for i in 0..40 {
        match c
            .send(SENDER, &body(&format!("+5255123410{i:02}"), "c1"))
            .await
        {
            SendResult::Accepted { .. } => accepted += 1,
            SendResult::Rejected { error, class, .. } => {
                assert_eq!(class, ErrorClass::Throttled);
                assert_eq!(error.code, Some(130429));
                throttled += 1;
            }
            other => panic!("send {i}: expected accepted or 130429, got {other:?}"),
        }
    }
    assert!(throttled > 0, "the per-number limit answered 130429");
    assert!(
        accepted > 0,
        "the first sends within the limit were accepted"
    );
    sandbox.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_sent_versus_unknown() {
    // A closed port: the request was never written, safe to retry.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let c = client(&closed, Duration::from_secs(2));
    assert!(matches!(
        c.send(SENDER, &body("+525512345600", "c1")).await,
        SendResult::NotSent { .. }
    ));

    // The sandbox accepts the message but answers after our timeout: the
    // message exists at the far end, so the outcome is unknown, never retried.
    let sandbox = Sandbox::start(SandboxConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        latency_ms: 1_500,
        ..SandboxConfig::default()
    })
    .await
    .unwrap();
    let c = client(&sandbox.base_url(), Duration::from_millis(700));
    assert!(matches!(
        c.send(SENDER, &body("+525512345600", "c1")).await,
        SendResult::Unknown { .. }
    ));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while sandbox.stats().accepted < 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the sandbox never accepted it"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sandbox.stop().await;
}
