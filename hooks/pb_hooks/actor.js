// Shared by actor.pb.js (handlers cannot see a hook file's top-level names).
// Fields only cf-bridge writes: a request that sets nothing else is the bridge's write-back, not a change
// anyone asked for, and keeps the record's stamp as it is.
const BRIDGE_OWNED = [
  "status", "coolify_service_id", "coolify_project_id", "error_message", "pending_reason",
  "last_healthy_at", "secrets_hash", "applied_hash", "domain", "router_key_id",
  "coolify_project_uuid", "bridge_error", "changed_by",
  "retained_until",
  "template_version",
];

function actorOf(e) {
  return e.auth ? `${e.auth.collection().name}:${e.auth.id}` : "";
}

module.exports = {
  // Create and update: stamp the acting auth record when the body asks for something.
  stampChange: (e) => {
    const actor = actorOf(e);
    if (!actor) return;
    const body = e.requestInfo().body || {};
    if (Object.keys(body).some((k) => BRIDGE_OWNED.indexOf(k) < 0)) {
      e.record.set("changed_by", actor);
    }
  },
  // Create and update of an instance: a start (desired_state turned to running, or a create that runs) or a
  // restart asked for in this write shows `deploying` in this same write, as cf-bridge would show it. The
  // bridge skips its own `deploying` write for a record that shows it: a start costs PocketBase the
  // person's write and the bridge's final batch, not a third write, broadcast and echo. The bridge stays
  // the judge: a start it cannot carry out (a suspended tenant, a quota, missing secrets) gets the status
  // it would have got, and a record whose service already runs the spec gets `running` back.
  markDeploy: (e, created) => {
    const record = e.record;
    if (record.collection().name !== "bot_instances") return;
    if (record.getString("desired_state") !== "running") return;
    if (!record.getDateTime("deletion_requested_at").isZero()) return;
    if (!created) {
      const before = record.original();
      const started = before.getString("desired_state") !== "running";
      const restarted = record.getString("restart_requested_at") !== before.getString("restart_requested_at");
      if (!started && !restarted) return;
    }
    record.set("status", "deploying");
    record.set("error_message", "");
    record.set("pending_reason", "");
  },
  // Delete: nothing is written; the record object the webhook and realtime send carries the stamp.
  stampDelete: (e) => {
    const actor = actorOf(e);
    if (actor) e.record.set("changed_by", actor);
  },
};
