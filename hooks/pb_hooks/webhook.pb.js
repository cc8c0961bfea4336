/// <reference path="../pb_data/types.d.ts" />
// Signed webhooks to cf-bridge for committed changes of tenants and bot_instances: every create and
// delete, and each update that changed a field a person owns (never the bridge's own write-backs).
// Env: CF_BRIDGE_WEBHOOK_URL (e.g. http://cf-bridge:8080/hooks/pocketbase), CF_BRIDGE_WEBHOOK_SECRET (whsec_...).
// These handlers run before PocketBase's realtime broadcast of the same change: they must never throw
// and must always call e.next(), or the API caller gets a 400 and the realtime event is lost.

onRecordAfterCreateSuccess((e) => {
  try {
    require(`${__hooks}/webhook_sign.js`).deliver(e, "create");
  } catch (err) {
    console.log("cf-bridge webhook hook error:", String(err));
  }
  e.next();
}, "tenants", "bot_instances");

onRecordAfterUpdateSuccess((e) => {
  try {
    const webhook = require(`${__hooks}/webhook_sign.js`);
    // With delivery off, deliver only logs why; the comparison is skipped.
    if (!webhook.enabled() || webhook.personChanged(e)) webhook.deliver(e, "update");
  } catch (err) {
    console.log("cf-bridge webhook hook error:", String(err));
  }
  e.next();
}, "tenants", "bot_instances");

// Also fires for cascade deletes (a tenant's bot_instances).
onRecordAfterDeleteSuccess((e) => {
  try {
    require(`${__hooks}/webhook_sign.js`).deliver(e, "delete");
  } catch (err) {
    console.log("cf-bridge webhook hook error:", String(err));
  }
  e.next();
}, "tenants", "bot_instances");
