//! Issue 15: the client's `/api/batch` against a real PocketBase with the project's schema. A write-back
//! and its deploy_logs row commit together or not at all; a failed batch names the request that failed
//! and why, which is how a re-sent row (same id) is recognised as already stored.

use cf_bridge::pocketbase::records::{InstancePatch, InstanceStatus, TenantPatch};
use cf_bridge::pocketbase::{BatchRequest, PbError};
use cf_testkit::TestPb;
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
