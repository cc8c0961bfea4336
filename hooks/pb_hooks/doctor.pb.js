/// <reference path="../pb_data/types.d.ts" />
// `cf-bridge doctor`'s hook check: superusers only. Answers where this PocketBase sends its webhooks and the
// signature its CF_BRIDGE_WEBHOOK_SECRET gives a short nonce (webhook id "msg_doctor", timestamp "0"), so the
// bridge compares it with its own webhook.secret; no secret leaves either side. The timestamp 0 and a body
// that is not JSON make the signature useless as a delivery.
routerAdd("POST", "/api/cf-bridge/webhook-check", (e) => {
  const body = e.requestInfo().body || {};
  const nonce = typeof body.nonce === "string" ? body.nonce : "";
  if (!/^[0-9a-z]{8,32}$/.test(nonce)) {
    throw new BadRequestError("nonce (8-32 of a-z, 0-9) is required");
  }
  return e.json(200, require(`${__hooks}/webhook_sign.js`).check("msg_doctor", "0", nonce));
}, $apis.requireSuperuserAuth());
