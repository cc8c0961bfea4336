/// <reference path="../pb_data/types.d.ts" />
// Deletion with retention (issue 19 item 2). `deletion_requested_at` on an instance or a tenant asks the
// bridge to delete it: the stack is stopped and its domain and router key withdrawn at once, its Coolify
// service and volumes are kept until `retained_until` (bridge-owned), then destroyed and the record deleted.
// A tenant's user may ask for the deletion of their instances and of their tenant, and may not take the
// request back: restore and purge are the operator's (the bridge's admin API and CLI) or a superuser's
// (the Admin Portal clearing the field restores). Rules are appended to, so this composes with other
// migrations' rules.
const OWN_TENANT_RECORD = "@request.auth.id != '' && user = @request.auth.id";
const ASK_ONLY =
  " && (@request.body.deletion_requested_at:isset = false || @request.body.deletion_requested_at != '')";
const BRIDGE_OWNED = " && @request.body.retained_until:isset = false";
// Every other tenant field a user must not send when asking for their tenant's deletion (superusers
// bypass rules; fields added later must be added here).
const TENANT_FIELDS = [
  "name", "slug", "user", "status", "plan_tier", "max_stacks", "coolify_project_uuid", "bridge_error",
  "changed_by",
];

migrate((app) => {
  const instances = app.findCollectionByNameOrId("bot_instances");
  instances.fields.add(new DateField({ name: "deletion_requested_at" }));
  instances.fields.add(new DateField({ name: "retained_until" }));
  instances.createRule = instances.createRule + " && @request.body.deletion_requested_at:isset = false" + BRIDGE_OWNED;
  instances.updateRule = instances.updateRule + ASK_ONLY + BRIDGE_OWNED;
  app.save(instances);

  const tenants = app.findCollectionByNameOrId("tenants");
  tenants.fields.add(new DateField({ name: "deletion_requested_at" }));
  const others = TENANT_FIELDS.map((f) => `@request.body.${f}:isset = false`).join(" && ");
  tenants.updateRule =
    `${OWN_TENANT_RECORD} && @request.body.deletion_requested_at:isset = true` +
    ` && @request.body.deletion_requested_at != '' && ${others}`;
  app.save(tenants);
}, (app) => {
  const instances = app.findCollectionByNameOrId("bot_instances");
  instances.fields.removeByName("deletion_requested_at");
  instances.fields.removeByName("retained_until");
  instances.createRule = instances.createRule
    .replace(" && @request.body.deletion_requested_at:isset = false" + BRIDGE_OWNED, "");
  instances.updateRule = instances.updateRule.replace(ASK_ONLY + BRIDGE_OWNED, "");
  app.save(instances);
  const tenants = app.findCollectionByNameOrId("tenants");
  tenants.fields.removeByName("deletion_requested_at");
  tenants.updateRule = null;
  app.save(tenants);
});
