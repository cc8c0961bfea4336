/// <reference path="../pb_data/types.d.ts" />
// A new instance starts as `pending`: users may not write bridge-owned fields, so the server sets it. One
// created to run already shows `deploying` here (actor.js, in its request hook) and keeps it.
// Model-level, so it applies to every create path (REST, batch, Admin UI, other hooks).
onRecordCreate((e) => {
  if (!e.record.getString("status")) {
    e.record.set("status", "pending");
  }
  e.next();
}, "bot_instances");
