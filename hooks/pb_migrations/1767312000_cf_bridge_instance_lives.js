/// <reference path="../pb_data/types.d.ts" />
// Instances are identified by their server-chosen id: a user may no longer choose the id of a new
// instance (a deleted id could otherwise be claimed again). Superusers still can, which the bridge
// handles by binding everything it keeps to the record's incarnation (tenant and `created`).
// Adds `router_key_id`, the bridge-owned id of the stack's current router key, which a router reads to
// refuse rotated keys.
const BRIDGE_OWNED = [
  "status", "coolify_service_id", "coolify_project_id", "error_message",
  "last_healthy_at", "secrets_hash", "applied_hash", "domain",
];
const OWN_TENANT = "@request.auth.id != '' && tenant.user = @request.auth.id";
const noFields = (fields) => fields.map((f) => `@request.body.${f}:isset = false`).join(" && ");

migrate((app) => {
  const instances = app.findCollectionByNameOrId("bot_instances");
  instances.fields.add(new TextField({ name: "router_key_id", max: 64 }));
  const owned = noFields([...BRIDGE_OWNED, "router_key_id"]);
  // `id` in a create body is refused for users (JSON and multipart alike, checked on 0.40.6).
  instances.createRule = `${OWN_TENANT} && ${owned} && @request.body.id:isset = false`;
  instances.updateRule = `${OWN_TENANT} && @request.body.tenant:changed = false && ${owned}`;
  app.save(instances);
}, (app) => {
  const instances = app.findCollectionByNameOrId("bot_instances");
  instances.fields.removeByName("router_key_id");
  const owned = noFields(BRIDGE_OWNED);
  instances.createRule = `${OWN_TENANT} && ${owned}`;
  instances.updateRule = `${OWN_TENANT} && @request.body.tenant:changed = false && ${owned}`;
  app.save(instances);
});
