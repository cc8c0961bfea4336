/// <reference path="../pb_data/types.d.ts" />
// Lost-update fix: PocketBase rewrites the whole row on PATCH, so concurrent PATCHes of disjoint fields
// (a user edits desired_state while the bridge writes status) could silently undo each other.
// With ignoreUnchangedFields only the columns that this request actually changed are written.
onRecordUpdateRequest((e) => {
  e.record.ignoreUnchangedFields(true);
  e.next();
}, "tenants", "bot_instances");
