//! Issue 15: the client's `/api/batch` against a real PocketBase with the project's schema. A write-back
//! and its deploy_logs row commit together or not at all; a failed batch names the request that failed
//! and why, which is how a re-sent row (same id) is recognised as already stored.

use cf_bridge::pocketbase::records::{InstancePatch, InstanceStatus, TenantPatch};
use cf_bridge::pocketbase::{BatchRequest, PbError};
use std::time::Duration;

use cf_bridge::pocketbase::PbClient;
use cf_bridge::pocketbase::batches::behind;
use cf_testkit::TestPb;
use cf_testkit::faultproxy::{Fault, FaultProxy, Rule};
use futures_util::future::join_all;
use serde_json::{Value, json};

const ROW_ID: &str = "rowaaaaaaaaaaa1";

async fn seed(pb: &TestPb) -> (String, String) {
    let tenant = pb
        .create_tenant(json!({"name": "t", "slug": "batch-t", "status": "active", "plan_tier": "team"}))
        .await["id"]
        .as_str()
        .expect("tenant id")
        .to_string();
    let template = pb.create_template(json!({"name": "tpl", "active": true})).await["id"]
        .as_str()
        .expect("template id")
        .to_string();
    let inst = pb
        .create_instance(
            json!({"tenant": tenant, "template": template, "name": "b", "subdomain": "batch-b",
            "desired_state": "running"}),
        )
        .await["id"]
        .as_str()
        .expect("instance id")
        .to_string();
    (tenant, inst)
}

fn row(tenant: &str, inst: &str, message: &str) -> Value {
    json!({"instance": inst, "record_id": inst, "collection": "bot_instances", "tenant": tenant,
        "action": "deploy", "status": "success", "message": message, "triggered_by": "test", "duration_ms": 7})
}

fn status(patch_status: InstanceStatus, inst: &str) -> BatchRequest {
    let patch = InstancePatch {
        status: Some(patch_status),
        error_message: Some("x".repeat(3000)),
        ..Default::default()
    };
    BatchRequest::patch_instance(inst, &patch).expect("patch body")
}

#[tokio::test]
async fn a_write_back_and_its_row_commit_together_and_a_resent_row_is_recognised() {
    let pb = TestPb::start().await;
    let (tenant, inst) = seed(&pb).await;
    let client = pb.client();

    client
        .batch(&[
            status(InstanceStatus::Running, &inst),
            BatchRequest::create_deploy_log(ROW_ID, &row(&tenant, &inst, "deployed")),
        ])
        .await
        .expect("batch");
    let record = pb
        .superuser_request("GET", &format!("/api/collections/bot_instances/records/{inst}"), None)
        .await;
    assert_eq!(record["status"], "running");
    assert_eq!(
        record["error_message"].as_str().map(str::len),
        Some(2000),
        "cut to the schema limit"
    );
    let stored = pb
        .superuser_request("GET", &format!("/api/collections/deploy_logs/records/{ROW_ID}"), None)
        .await;
    assert_eq!(
        (stored["message"].as_str(), stored["duration_ms"].as_u64()),
        (Some("deployed"), Some(7))
    );

    // The same row again: PocketBase refuses its id, names the request, and rolls the patch back.
    let again = client
        .batch(&[
            status(InstanceStatus::Stopped, &inst),
            BatchRequest::create_deploy_log(ROW_ID, &row(&tenant, &inst, "again")),
        ])
        .await;
    match again {
        Err(PbError::Batch { index: 1, error }) => {
            let fields = error.field_errors().expect("a validation error");
            assert_eq!(fields["id"].code, "validation_not_unique", "{error}");
        }
        other => panic!("expected the row's request to fail, got {other:?}"),
    }
    let record = pb
        .superuser_request("GET", &format!("/api/collections/bot_instances/records/{inst}"), None)
        .await;
    assert_eq!(record["status"], "running", "the patch was rolled back with the row");

    // A record that is gone fails the batch at its patch; the row is not written either.
    let tenant_patch = TenantPatch {
        bridge_error: Some("x".into()),
        ..Default::default()
    };
    let gone = client
        .batch(&[
            BatchRequest::patch_tenant("aaaaaaaaaaaaaaa", &tenant_patch).expect("patch body"),
            BatchRequest::create_deploy_log("rowaaaaaaaaaaa2", &row(&tenant, &inst, "never")),
        ])
        .await;
    assert!(
        matches!(&gone, Err(PbError::Batch { index: 0, error }) if matches!(**error, PbError::NotFound)),
        "{gone:?}"
    );
    let (code, _) = pb
        .request_as(
            &pb.superuser_token().await,
            "GET",
            "/api/collections/deploy_logs/records/rowaaaaaaaaaaa2",
            None,
        )
        .await;
    assert_eq!(code, 404);

    // A row whose instance is gone names the relation, so it can be sent without it.
    pb.delete("bot_instances", &inst).await;
    match client
        .batch(&[BatchRequest::create_deploy_log(
            "rowaaaaaaaaaaa3",
            &row(&tenant, &inst, "destroyed"),
        )])
        .await
    {
        Err(PbError::Batch { index: 0, error }) => {
            let fields = error.field_errors().expect("a validation error");
            assert_eq!(fields["instance"].code, "validation_missing_rel_records", "{error}");
        }
        other => panic!("expected the missing relation to be named, got {other:?}"),
    }
}

/// Batches of late jobs that wait behind one in flight go out together, and one that fails inside the combined request
/// gets its own failure while the others are carried out: what each caller is answered is what it would
/// have been answered alone.
#[tokio::test]
async fn batches_waiting_behind_one_in_flight_are_answered_as_if_sent_alone() {
    let pb = TestPb::start().await;
    let (tenant, first) = seed(&pb).await;
    let template = pb
        .superuser_request("GET", &format!("/api/collections/bot_instances/records/{first}"), None)
        .await["template"]
        .as_str()
        .expect("template id")
        .to_string();
    let mut instances = vec![first];
    for n in 0..5 {
        let sub = format!("batch-c{n}");
        let created = pb
            .create_instance(
                json!({"tenant": tenant, "template": template, "name": sub, "subdomain": sub,
                "desired_state": "running"}),
            )
            .await;
        instances.push(created["id"].as_str().expect("instance id").to_string());
    }
    // Through a proxy that counts the batches and holds each 300 ms: with one write in flight (the
    // default), the first call goes at once and the others queue behind it.
    let proxy = FaultProxy::start(pb.port).await;
    proxy.add_rule(Rule::new(Fault::Delay(Duration::from_millis(300)), Some("POST"), &["/api/batch"]).times(100));
    let mut settings = pb.settings();
    settings.url = url::Url::parse(&proxy.url).expect("proxy url");
    let client = PbClient::new(&settings).expect("client");

    let calls = instances.iter().enumerate().map(|(n, inst)| {
        let requests = vec![
            status(InstanceStatus::Running, inst),
            BatchRequest::create_deploy_log(
                &format!("rowcombined{n:04}"),
                &row(&tenant, inst, &format!("combined {n}")),
            ),
        ];
        let client = client.clone();
        // Sent as jobs that started late do: those may go out together.
        async move { behind(true, client.batch(&requests)).await }
    });
    let gone = {
        let client = client.clone();
        let tenant_patch = TenantPatch {
            bridge_error: Some("x".into()),
            ..Default::default()
        };
        async move {
            let requests = [BatchRequest::patch_tenant("aaaaaaaaaaaaaaa", &tenant_patch).expect("patch body")];
            behind(true, client.batch(&requests)).await
        }
    };
    let (answers, gone) = tokio::join!(join_all(calls), gone);

    assert!(
        matches!(&gone, Err(PbError::Batch { index: 0, error }) if matches!(**error, PbError::NotFound)),
        "the batch whose record is gone is told so, at its own index: {gone:?}"
    );
    for (n, (inst, answer)) in instances.iter().zip(answers).enumerate() {
        let answer = answer.unwrap_or_else(|e| panic!("batch {n} failed with the other's failure: {e}"));
        assert_eq!(answer.len(), 2, "batch {n} is answered its own two requests");
        assert_eq!(
            answer[0]["id"],
            inst.as_str(),
            "batch {n}'s first answer is its own record"
        );
        assert_eq!(answer[1]["message"], format!("combined {n}"));
        let record = pb
            .superuser_request("GET", &format!("/api/collections/bot_instances/records/{inst}"), None)
            .await;
        assert_eq!(record["status"], "running", "batch {n} was carried out");
    }
    // Seven batches: the first alone, the six behind it in fewer requests (and those that went with the
    // failed one again without it). Sent alone they would have been seven requests.
    let sent = proxy.forwarded(|r| r.starts_with("POST /api/batch"));
    assert!(sent < 7, "{sent} batch requests for seven batches");
    assert_eq!(proxy.most_delayed_at_once(), 1, "one write in flight at a time");
}
