/// <reference path="../pb_data/types.d.ts" />
// The request hooks of tenants and bot_instances, one handler per event: each handler call takes a JS
// runtime from PocketBase's pool, so the concerns below share one registration instead of one each.
//
// Who did it: the acting user (or superuser) of a request that changes a tenant or bot instance is stamped
// on the record as `changed_by`, in the same write, so realtime frames and webhooks carry it to cf-bridge,
// which names that user in the deploy_logs rows of the actions it takes for the change. A stamp that fails
// must never fail the user's request: errors are logged and the request goes on.
//
// Starts show `deploying` in the person's own write (actor.js `markDeploy`), so that the bridge need not
// write it: one PocketBase write less per start. A mark that fails never fails the request either.
//
// Lost updates (update only): PocketBase rewrites the whole row on PATCH, so concurrent PATCHes of disjoint
// fields (a user edits desired_state while the bridge writes status) could silently undo each other. With
// ignoreUnchangedFields only the columns that this request actually changed are written.

onRecordCreateRequest((e) => {
  try {
    const actor = require(`${__hooks}/actor.js`);
    actor.stampChange(e);
    actor.markDeploy(e, true);
  } catch (err) {
    console.log("cf-bridge actor hook error:", String(err));
  }
  e.next();
}, "tenants", "bot_instances");

onRecordUpdateRequest((e) => {
  e.record.ignoreUnchangedFields(true);
  try {
    const actor = require(`${__hooks}/actor.js`);
    actor.stampChange(e);
    actor.markDeploy(e, false);
  } catch (err) {
    console.log("cf-bridge actor hook error:", String(err));
  }
  e.next();
}, "tenants", "bot_instances");

onRecordDeleteRequest((e) => {
  try {
    require(`${__hooks}/actor.js`).stampDelete(e);
  } catch (err) {
    console.log("cf-bridge actor hook error:", String(err));
  }
  e.next();
}, "tenants", "bot_instances");
