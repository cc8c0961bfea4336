/// <reference path="../pb_data/types.d.ts" />
// Signed webhooks to cf-bridge for committed changes of tenants and bot_instances: every create and
// delete, and each update that changed a field a person owns (never the bridge's own write-backs).
// Env: CF_BRIDGE_WEBHOOK_URL (e.g. http://cf-bridge:8080/hooks/pocketbase), CF_BRIDGE_WEBHOOK_SECRET (whsec_...).
// These handlers run before PocketBase's realtime broadcast of the same change: they must never throw
// and must always call e.next(), or the API caller gets a 400 and the realtime event is lost.
//
// Optional: the bridge sees every change by realtime and resync without them. Whether they are on is
// decided once, when PocketBase loads its hooks (a process's environment cannot change while it runs, so
// setting or unsetting either variable always took a restart): with either variable unset nothing is
// registered and a write pays nothing here, not even a JS runtime from the pool.

if ($os.getenv("CF_BRIDGE_WEBHOOK_URL") && $os.getenv("CF_BRIDGE_WEBHOOK_SECRET")) {
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
      if (webhook.personChanged(e)) webhook.deliver(e, "update");
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
} else {
  console.log("cf-bridge webhook delivery off (CF_BRIDGE_WEBHOOK_URL or CF_BRIDGE_WEBHOOK_SECRET unset): the bridge sees changes by realtime and resync");
}
