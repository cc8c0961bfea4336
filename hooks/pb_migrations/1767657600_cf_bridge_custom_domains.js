/// <reference path="../pb_data/types.d.ts" />
// Custom domains (issue 19 item 3): `tenants.domain`, set by an admin (superusers only: a user's tenant
// write may only ask for its deletion, so both fields are refused from users), and `domain_verified`,
// which an admin sets once the tenant proved the domain is theirs (DNS). Instances of a tenant with a
// verified domain are served at `<subdomain>.<domain>`. A domain is held by one tenant at most: the unique
// index refuses a second holder with PocketBase's own "Value must be unique." on the field, which names
// no other tenant. The bridge checks the name itself (IDNA, lengths, labels) before serving it.
const REFUSED = " && @request.body.domain:isset = false && @request.body.domain_verified:isset = false";

migrate((app) => {
  const tenants = app.findCollectionByNameOrId("tenants");
  tenants.fields.add(new TextField({ name: "domain", max: 253 }));
  tenants.fields.add(new BoolField({ name: "domain_verified" }));
  tenants.indexes.push("CREATE UNIQUE INDEX idx_tenants_domain ON tenants (domain) WHERE domain != ''");
  if (tenants.updateRule !== null) tenants.updateRule = tenants.updateRule + REFUSED;
  app.save(tenants);
}, (app) => {
  const tenants = app.findCollectionByNameOrId("tenants");
  tenants.fields.removeByName("domain");
  tenants.fields.removeByName("domain_verified");
  tenants.indexes = tenants.indexes.filter((i) => !i.includes("idx_tenants_domain"));
  if (tenants.updateRule !== null) tenants.updateRule = tenants.updateRule.replace(REFUSED, "");
  app.save(tenants);
});
