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
  // Delete: nothing is written; the record object the webhook and realtime send carries the stamp.
  stampDelete: (e) => {
    const actor = actorOf(e);
    if (actor) e.record.set("changed_by", actor);
  },
};
