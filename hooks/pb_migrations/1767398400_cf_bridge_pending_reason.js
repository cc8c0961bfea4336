/// <reference path="../pb_data/types.d.ts" />
// Adds `pending_reason`, the bridge-owned reason an instance waits in `pending` (its secrets, its tenant's
// Coolify project, a free stack slot of its plan), so that `error_message` only carries what needs a
// person or a retry. The field is refused from users by appending to the API rules rather than rewriting
// them, so this composes with other migrations' rules.
const REFUSED = " && @request.body.pending_reason:isset = false";

migrate((app) => {
  const instances = app.findCollectionByNameOrId("bot_instances");
  instances.fields.add(new TextField({ name: "pending_reason", max: 2000 }));
  instances.createRule = instances.createRule + REFUSED;
  instances.updateRule = instances.updateRule + REFUSED;
  app.save(instances);
}, (app) => {
  const instances = app.findCollectionByNameOrId("bot_instances");
  instances.fields.removeByName("pending_reason");
  instances.createRule = instances.createRule.replace(REFUSED, "");
  instances.updateRule = instances.updateRule.replace(REFUSED, "");
  app.save(instances);
});
