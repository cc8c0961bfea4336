/// <reference path="../pb_data/types.d.ts" />
// Adds `template_version`, the bridge-owned version of the template an instance's stack was last rendered
// from (written with the outcome of each applied change; a rollout moves it). The domain the stack is
// served at is the existing bridge-owned `domain`. Refused from users by appending to the API rules, as
// the earlier bridge-owned fields are, so this composes with other migrations' rules.
const REFUSED = " && @request.body.template_version:isset = false";

migrate((app) => {
  const instances = app.findCollectionByNameOrId("bot_instances");
  instances.fields.add(new TextField({ name: "template_version", max: 100 }));
  instances.createRule = instances.createRule + REFUSED;
  instances.updateRule = instances.updateRule + REFUSED;
  app.save(instances);
}, (app) => {
  const instances = app.findCollectionByNameOrId("bot_instances");
  instances.fields.removeByName("template_version");
  instances.createRule = instances.createRule.replace(REFUSED, "");
  instances.updateRule = instances.updateRule.replace(REFUSED, "");
  app.save(instances);
});
