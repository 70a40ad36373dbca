//! The credential broker against a fake shared store, as several workers share Envoy's shared data:
//! one fetch for all of them, back-off after failures, waiting requests signed or failed with the
//! reason, and refresh before expiry.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // a test stops where it fails

mod common;

use bedrock_gateway_core::aws::broker::{
    self, Broker, Decided, Dispatcher, Fetch, ParkedRequest, Reply, Verdict, MAX_WAIT_MS,
};
use bedrock_gateway_core::aws::credentials::{FetchStep, HttpCall, Provider};
use bedrock_gateway_core::errors::ApiFormat;
use common::FakeStore;

const KEY: &str = "ai_gateway/credentials/pod_identity/agent/v1/credentials";
/// 2030-01-01T00:00:00Z, and a clock an hour before it.
const EXPIRES: u64 = 1_893_456_000;
const NOW_MS: u64 = (EXPIRES - 3600) * 1000;
const CREDENTIALS: &[u8] = br#"{"AccessKeyId":"ASIA1","SecretAccessKey":"s","Token":"t","Expiration":"2030-01-01T00:00:00Z"}"#;

fn providers() -> Vec<(String, Provider)> {
    let provider = Provider::PodIdentity {
        cluster: "agent".into(),
        authority: "169.254.170.23".into(),
        path: "/v1/credentials".into(),
    };
    vec![(KEY.to_owned(), provider)]
}

/// The broker holds whatever the pipeline parks; a name stands for a translated request here.
fn parked(since_ms: u64) -> ParkedRequest<&'static str> {
    ParkedRequest {
        key: KEY.to_owned(),
        region: "us-east-1".into(),
        upstream: "the translated request",
        format: ApiFormat::OpenAi,
        since_ms,
    }
}

#[test]
fn one_worker_fetches_for_all_and_every_waiting_request_is_signed() {
    let store = FakeStore::default();
    let (mut first, mut second) = (Broker::<&str>::default(), Broker::<&str>::default());
    first.park(1, parked(NOW_MS));
    second.park(2, parked(NOW_MS));
    let due = first.due_fetches(&store, &providers(), NOW_MS);
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].step, FetchStep::Start);
    assert!(
        second.due_fetches(&store, &providers(), NOW_MS).is_empty(),
        "the lock is taken: no second fetch"
    );
    assert!(
        first.take_decided(&store, NOW_MS).is_empty(),
        "nothing to sign with yet"
    );

    first.dispatched(7, due[0].clone());
    let reply = first.on_reply(&store, 7, Some(200), CREDENTIALS, NOW_MS + 20);
    assert_eq!(
        reply,
        Reply::Stored {
            provider: "EKS Pod Identity",
            expiration_unix: EXPIRES
        }
    );
    for (broker, stream) in [(&mut first, 1), (&mut second, 2)] {
        let decided = broker.take_decided(&store, NOW_MS + 30);
        assert_eq!(decided.len(), 1);
        assert_eq!(decided[0].0, stream);
        assert!(
            matches!(&decided[0].2, Verdict::Sign(c) if c.credentials().access_key_id == "ASIA1")
        );
        assert_eq!(broker.waiting(), 0);
    }
    assert!(
        first
            .due_fetches(&store, &providers(), NOW_MS + 40)
            .is_empty(),
        "fresh credentials need no fetch"
    );
    assert_eq!(
        first.on_reply(&store, 7, Some(200), CREDENTIALS, NOW_MS),
        Reply::Unknown,
        "a reply is consumed once"
    );
}

#[test]
fn failures_back_off_and_fail_waiting_requests_with_the_reason() {
    let store = FakeStore::default();
    let mut broker = Broker::<&str>::default();
    broker.park(1, parked(NOW_MS));
    let fetch = broker.due_fetches(&store, &providers(), NOW_MS).remove(0);
    broker.dispatched(1, fetch);
    let Reply::Failed(reason) = broker.on_reply(&store, 1, Some(500), b"", NOW_MS + 10) else {
        panic!("a 500 fails")
    };
    assert!(reason.contains("HTTP 500"), "{reason}");
    assert!(
        broker.take_decided(&store, NOW_MS + 20).is_empty(),
        "one failure is retried before anyone gives up"
    );
    assert!(
        broker
            .due_fetches(&store, &providers(), NOW_MS + 20)
            .is_empty(),
        "no retry during the back-off"
    );

    let retry = broker.due_fetches(&store, &providers(), NOW_MS + 2_000);
    assert_eq!(retry.len(), 1, "retried once the back-off has passed");
    broker.dispatched(2, retry[0].clone());
    broker.on_reply(&store, 2, None, b"", NOW_MS + 2_010);
    let decided = broker.take_decided(&store, NOW_MS + 2_020);
    assert_eq!(decided.len(), 1);
    let Verdict::Fail(reason) = &decided[0].2 else {
        panic!("two failures give up")
    };
    assert!(reason.contains("EKS Pod Identity"), "{reason}");
    assert!(
        !reason.contains("ASIA") && !reason.contains("\"s\""),
        "no secret material: {reason}"
    );
}

#[test]
fn a_request_that_ended_while_waiting_is_never_resumed() {
    let store = FakeStore::default();
    let mut broker = Broker::<&str>::default();
    broker.park(5, parked(NOW_MS));
    broker.park(6, parked(NOW_MS));
    broker.forget(5);
    let fetch = broker.due_fetches(&store, &providers(), NOW_MS).remove(0);
    broker.dispatched(1, fetch);
    broker.on_reply(&store, 1, Some(200), CREDENTIALS, NOW_MS);
    let streams: Vec<u64> = broker
        .take_decided(&store, NOW_MS)
        .into_iter()
        .map(|(stream, _, _)| stream)
        .collect();
    assert_eq!(streams, [6]);
}

#[test]
fn a_request_waits_no_longer_than_the_limit() {
    let store = FakeStore::default();
    let mut broker = Broker::<&str>::default();
    broker.park(9, parked(NOW_MS));
    assert!(broker
        .take_decided(&store, NOW_MS + MAX_WAIT_MS - 1)
        .is_empty());
    let decided = broker.take_decided(&store, NOW_MS + MAX_WAIT_MS);
    assert_eq!(
        decided[0].2,
        Verdict::Fail("the credential endpoint did not answer in time".into())
    );
}

#[test]
fn credentials_are_refreshed_before_they_expire_and_still_sign_meanwhile() {
    let store = FakeStore::default();
    let mut broker = Broker::<&str>::default();
    let fetch = broker.due_fetches(&store, &providers(), NOW_MS).remove(0);
    broker.dispatched(1, fetch);
    broker.on_reply(&store, 1, Some(200), CREDENTIALS, NOW_MS);
    let ten_minutes_left = (EXPIRES - 600) * 1000;
    assert_eq!(
        broker
            .due_fetches(&store, &providers(), ten_minutes_left)
            .len(),
        1,
        "refresh starts 15 minutes ahead"
    );
    broker.park(3, parked(ten_minutes_left));
    assert!(
        matches!(
            broker.take_decided(&store, ten_minutes_left)[0].2,
            Verdict::Sign(_)
        ),
        "still usable while refreshing"
    );
    let last_minute = (EXPIRES - 30) * 1000;
    broker.park(4, parked(last_minute));
    assert!(
        broker.take_decided(&store, last_minute).is_empty(),
        "never signs in the last minute of their life"
    );
}

#[test]
fn imds_goes_on_call_by_call() {
    let store = FakeStore::default();
    let mut broker = Broker::<&str>::default();
    let imds = Provider::Imds {
        cluster: "imds".into(),
        authority: "169.254.169.254".into(),
    };
    let providers = vec![("ai_gateway/credentials/imds/imds".to_owned(), imds)];
    let fetch = broker.due_fetches(&store, &providers, NOW_MS).remove(0);
    broker.dispatched(1, fetch);
    let Reply::Next(Fetch { step, .. }) =
        broker.on_reply(&store, 1, Some(200), b"session-token", NOW_MS)
    else {
        panic!("the token is the first of three calls")
    };
    assert_eq!(
        step,
        FetchStep::ImdsRoleName {
            session_token: "session-token".into()
        }
    );
}

#[test]
fn calls_whose_answer_never_comes_do_not_stay_for_good() {
    // Envoy drops a configuration's callouts with it: their answers never come back.
    let store = FakeStore::default();
    let mut broker = Broker::<&str>::default();
    let fetch = broker.due_fetches(&store, &providers(), NOW_MS).remove(0);
    for token in 0..1_000 {
        broker.dispatched(token, fetch.clone());
    }
    assert_eq!(
        broker.on_reply(&store, 0, Some(200), CREDENTIALS, NOW_MS),
        Reply::Unknown,
        "the oldest lost call was let go"
    );
    assert!(
        matches!(
            broker.on_reply(&store, 999, Some(200), CREDENTIALS, NOW_MS),
            Reply::Stored { .. }
        ),
        "the newest is still known"
    );
}

// ---- The loop a host drives, against a fake dispatcher -----------------------------------

/// A host's calls for the broker's loop: calls it sent (or refused), requests it served.
#[derive(Default)]
struct FakeDispatcher {
    broker: Broker<&'static str>,
    /// The broker is in use (a re-entered hook): nothing may be done with it.
    broker_in_use: bool,
    refuse_calls: bool,
    sent: Vec<(u64, String)>,
    served: Vec<(u64, &'static str, Verdict)>,
}

impl Dispatcher<&'static str> for FakeDispatcher {
    fn with_broker<T>(&mut self, step: impl FnOnce(&mut Broker<&'static str>) -> T) -> Option<T> {
        (!self.broker_in_use).then(|| step(&mut self.broker))
    }

    fn send(&mut self, call: &HttpCall) -> Result<u64, String> {
        if self.refuse_calls {
            return Err("no such cluster".into());
        }
        let token = 100 + self.sent.len() as u64;
        self.sent.push((token, call.cluster.clone()));
        Ok(token)
    }

    fn serve(&mut self, decided: Vec<Decided<&'static str>>) {
        self.served.extend(
            decided
                .into_iter()
                .map(|(stream, parked, verdict)| (stream, parked.upstream, verdict)),
        );
    }
}

#[test]
fn the_loop_fetches_on_the_tick_and_serves_waiting_requests_when_the_reply_comes() {
    let store = FakeStore::default();
    let mut host = FakeDispatcher::default();
    host.broker.park(5, parked(NOW_MS));

    broker::on_tick(&mut host, &store, &providers(), NOW_MS);
    assert_eq!(
        host.sent,
        vec![(100, "agent".to_owned())],
        "one call to the agent's cluster"
    );
    assert!(host.served.is_empty(), "nothing to sign with yet");
    broker::on_tick(&mut host, &store, &providers(), NOW_MS + 100);
    assert_eq!(host.sent.len(), 1, "the fetch in flight holds the lock");

    broker::on_reply(&mut host, &store, 999, Some(200), CREDENTIALS, NOW_MS + 150);
    assert!(
        host.served.is_empty(),
        "a reply to another call is not this fetch's"
    );
    broker::on_reply(&mut host, &store, 100, Some(200), CREDENTIALS, NOW_MS + 200);
    assert_eq!(host.served.len(), 1);
    let (stream, request, verdict) = &host.served[0];
    assert_eq!((*stream, *request), (5, "the translated request"));
    assert!(matches!(verdict, Verdict::Sign(c) if c.credentials().access_key_id == "ASIA1"));
    assert_eq!(host.broker.waiting(), 0);
}

#[test]
fn a_call_the_host_cannot_send_counts_as_a_failed_fetch() {
    let store = FakeStore::default();
    let mut host = FakeDispatcher {
        refuse_calls: true,
        ..FakeDispatcher::default()
    };
    host.broker.park(5, parked(NOW_MS));
    broker::on_tick(&mut host, &store, &providers(), NOW_MS);
    broker::on_tick(&mut host, &store, &providers(), NOW_MS + 2_000);
    assert_eq!(
        host.served.len(),
        1,
        "two refused calls give up on the waiting request"
    );
    let Verdict::Fail(reason) = &host.served[0].2 else {
        panic!("a refused call fails the request")
    };
    assert!(
        reason.contains("cannot call the EKS Pod Identity cluster \"agent\""),
        "{reason}"
    );
    assert!(reason.contains("no such cluster"), "{reason}");
}

#[test]
fn a_broker_in_use_is_left_alone() {
    let store = FakeStore::default();
    let mut host = FakeDispatcher {
        broker_in_use: true,
        ..FakeDispatcher::default()
    };
    host.broker.park(5, parked(NOW_MS));
    broker::on_tick(&mut host, &store, &providers(), NOW_MS);
    broker::on_reply(&mut host, &store, 100, Some(200), CREDENTIALS, NOW_MS);
    assert!(host.sent.is_empty() && host.served.is_empty());
    assert_eq!(
        host.broker.waiting(),
        1,
        "the request still waits for a later tick"
    );
}
