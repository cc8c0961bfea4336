/// <reference path="../pb_data/types.d.ts" />
// Who did it: `changed_by` on tenants and bot_instances is stamped by hooks/pb_hooks/actor.pb.js with the
// acting auth record ("<auth collection>:<id>") in the same write as the change, and is bridge-readable
// only (refused from users by appending to the API rules, which composes with other migrations' rules).
// `deploy_logs.triggered_by_user` relates a row to the user whose change it carried out; `triggered_by`
// keeps naming the actor as text (a user, a superuser, an operator or cf-bridge itself).
const REFUSED = " && @request.body.changed_by:isset = false";

migrate((app) => {
  const users = app.findCollectionByNameOrId("users");
  for (const name of ["tenants", "bot_instances"]) {
    const c = app.findCollectionByNameOrId(name);
    c.fields.add(new TextField({ name: "changed_by", max: 100 }));
    if (c.createRule !== null) c.createRule = c.createRule + REFUSED;
    if (c.updateRule !== null) c.updateRule = c.updateRule + REFUSED;
    app.save(c);
  }
  const logs = app.findCollectionByNameOrId("deploy_logs");
  logs.fields.add(new RelationField({
    name: "triggered_by_user", required: false, maxSelect: 1, cascadeDelete: false, collectionId: users.id,
  }));
  app.save(logs);
}, (app) => {
  const logs = app.findCollectionByNameOrId("deploy_logs");
  logs.fields.removeByName("triggered_by_user");
  app.save(logs);
  for (const name of ["tenants", "bot_instances"]) {
    const c = app.findCollectionByNameOrId(name);
    c.fields.removeByName("changed_by");
    if (c.createRule !== null) c.createRule = c.createRule.replace(REFUSED, "");
    if (c.updateRule !== null) c.updateRule = c.updateRule.replace(REFUSED, "");
    app.save(c);
  }
});
