/// <reference path="../pb_data/types.d.ts" />
// cf-bridge schema: tenants, bot_templates, bot_instances, deploy_logs (PocketBase 0.23+ "fields" format).
// Fields the bridge owns are writable by superusers only; the API rules below refuse them from users.
migrate((app) => {
  // DNS label: 1-63 chars, lowercase alphanumerics and inner hyphens.
  const DNS_LABEL = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$";
  // Autodate fields are not implicit for collections created in migrations.
  const timestamps = [
    { name: "created", type: "autodate", onCreate: true, onUpdate: false },
    { name: "updated", type: "autodate", onCreate: true, onUpdate: true },
  ];
  const users = app.findCollectionByNameOrId("users");

  const tenants = new Collection({
    type: "base",
    name: "tenants",
    listRule: "@request.auth.id != '' && user = @request.auth.id",
    viewRule: "@request.auth.id != '' && user = @request.auth.id",
    createRule: null,
    updateRule: null,
    deleteRule: null,
    fields: [
      { name: "name", type: "text", required: true, max: 200 },
      { name: "slug", type: "text", required: true, max: 63, pattern: DNS_LABEL },
      { name: "user", type: "relation", maxSelect: 1, cascadeDelete: false, collectionId: users.id },
      { name: "status", type: "select", required: true, maxSelect: 1, values: ["active", "suspended"] },
      { name: "plan_tier", type: "select", required: true, maxSelect: 1, values: ["starter", "team", "business", "sovereign"] },
      // 0 = use the plan's stack count
      { name: "max_stacks", type: "number", onlyInt: true, min: 0 },
      { name: "coolify_project_uuid", type: "text" },
      { name: "bridge_error", type: "text", max: 2000 },
      ...timestamps,
    ],
    indexes: ["CREATE UNIQUE INDEX idx_tenants_slug ON tenants (slug)"],
  });
  app.save(tenants);

  const templates = new Collection({
    type: "base",
    name: "bot_templates",
    listRule: "@request.auth.id != ''",
    viewRule: "@request.auth.id != ''",
    createRule: null,
    updateRule: null,
    deleteRule: null,
    fields: [
      { name: "name", type: "text", required: true, max: 200 },
      { name: "description", type: "text" },
      { name: "compose_template", type: "text", max: 100000 },
      { name: "required_secrets", type: "json" },
      { name: "default_config", type: "json" },
      { name: "icon", type: "text" },
      // cores, e.g. 0.25
      { name: "cpu_default", type: "number", min: 0 },
      // MB
      { name: "mem_default", type: "number", onlyInt: true, min: 0 },
      { name: "public_service", type: "text" },
      { name: "public_port", type: "number", onlyInt: true, min: 0, max: 65535 },
      { name: "active", type: "bool" },
      { name: "version", type: "text" },
      ...timestamps,
    ],
    indexes: ["CREATE UNIQUE INDEX idx_bot_templates_name ON bot_templates (name)"],
  });
  app.save(templates);

  // A user may touch an instance only through their own tenant and never set a bridge-owned field.
  const BRIDGE_OWNED = [
    "status", "coolify_service_id", "coolify_project_id", "error_message",
    "last_healthy_at", "secrets_hash", "applied_hash", "domain",
  ];
  const noBridgeFields = BRIDGE_OWNED.map((f) => `@request.body.${f}:isset = false`).join(" && ");
  const ownTenant = "@request.auth.id != '' && tenant.user = @request.auth.id";

  const instances = new Collection({
    type: "base",
    name: "bot_instances",
    listRule: ownTenant,
    viewRule: ownTenant,
    createRule: `${ownTenant} && ${noBridgeFields}`,
    // Moving an instance to another tenant is refused: the tenant field may not be sent with a new value.
    updateRule: `${ownTenant} && @request.body.tenant:changed = false && ${noBridgeFields}`,
    deleteRule: ownTenant,
    fields: [
      { name: "tenant", type: "relation", required: true, maxSelect: 1, cascadeDelete: true, collectionId: tenants.id },
      { name: "template", type: "relation", required: true, maxSelect: 1, cascadeDelete: false, collectionId: templates.id },
      { name: "name", type: "text", required: true, max: 100 },
      { name: "subdomain", type: "text", required: true, max: 63, pattern: DNS_LABEL },
      { name: "config", type: "json", maxSize: 65536 },
      // cores, 0 = template default
      { name: "cpu_limit", type: "number", min: 0 },
      // MB, 0 = template default
      { name: "mem_limit", type: "number", onlyInt: true, min: 0 },
      { name: "desired_state", type: "select", required: true, maxSelect: 1, values: ["running", "stopped"] },
      { name: "restart_requested_at", type: "date" },
      { name: "status", type: "select", maxSelect: 1, values: ["pending", "deploying", "running", "stopped", "error"] },
      { name: "coolify_service_id", type: "text" },
      { name: "coolify_project_id", type: "text" },
      { name: "error_message", type: "text", max: 2000 },
      { name: "last_healthy_at", type: "date" },
      { name: "secrets_hash", type: "text" },
      { name: "applied_hash", type: "text" },
      { name: "domain", type: "text" },
      ...timestamps,
    ],
    indexes: [
      "CREATE UNIQUE INDEX idx_bot_instances_subdomain ON bot_instances (subdomain)",
      "CREATE INDEX idx_bot_instances_tenant ON bot_instances (tenant)",
    ],
  });
  app.save(instances);

  // Logs outlive their instance: destroy logs are written after the record is gone, so record_id
  // carries the id and the relations are optional.
  const logs = new Collection({
    type: "base",
    name: "deploy_logs",
    listRule: "@request.auth.id != '' && tenant.user = @request.auth.id",
    viewRule: "@request.auth.id != '' && tenant.user = @request.auth.id",
    createRule: null,
    updateRule: null,
    deleteRule: null,
    fields: [
      { name: "instance", type: "relation", required: false, maxSelect: 1, cascadeDelete: false, collectionId: instances.id },
      { name: "record_id", type: "text", required: true, max: 100 },
      { name: "collection", type: "text", max: 100 },
      { name: "tenant", type: "relation", required: false, maxSelect: 1, cascadeDelete: false, collectionId: tenants.id },
      {
        name: "action", type: "select", maxSelect: 1,
        values: ["deploy", "update", "start", "stop", "restart", "destroy", "secrets", "project_create", "project_delete", "error"],
      },
      { name: "status", type: "select", maxSelect: 1, values: ["success", "failed", "pending"] },
      { name: "message", type: "text", max: 5000 },
      { name: "triggered_by", type: "text", max: 200 },
      { name: "duration_ms", type: "number", onlyInt: true, min: 0 },
      ...timestamps,
    ],
    indexes: ["CREATE INDEX idx_deploy_logs_record_created ON deploy_logs (record_id, created)"],
  });
  app.save(logs);

  const settings = app.settings();
  settings.batch.enabled = true;
  settings.batch.maxRequests = 50;
  app.save(settings);
}, (app) => {
  for (const name of ["deploy_logs", "bot_instances", "bot_templates", "tenants"]) {
    try {
      app.delete(app.findCollectionByNameOrId(name));
    } catch (_) {
      // already gone
    }
  }
});
