/// <reference path="../pb_data/types.d.ts" />
// cf-bridge's stream check. While its realtime stream is up, the bridge posts {"clientId", "nonce"} here
// every few seconds and expects the nonce back on that stream ({"ping": nonce} on "bridge_keepalive");
// a stream that stopped delivering (half-open, a stuck proxy) is then noticed in seconds instead of at
// the bridge's idle watchdog. Superusers only, and only to the caller's own realtime client; no database
// access, and successful pings stay out of PocketBase's request log (a write per request otherwise).
// {"sent": false} means PocketBase no longer knows that client: the stream is gone.
routerAdd("POST", "/api/cf-bridge/ping", (e) => {
  const body = e.requestInfo().body || {};
  const clientId = typeof body.clientId === "string" ? body.clientId : "";
  const nonce = typeof body.nonce === "string" ? body.nonce : "";
  if (clientId.length < 1 || clientId.length > 255 || !/^[0-9a-z]{1,32}$/.test(nonce)) {
    throw new BadRequestError("clientId (1-255 chars) and nonce (1-32 of a-z, 0-9) are required");
  }
  let client = null;
  try {
    client = $app.subscriptionsBroker().clientById(clientId);
  } catch (_) {
    return e.json(200, { sent: false });
  }
  const owner = client.get("auth");
  if (!owner || owner.id !== e.auth.id || client.isDiscarded() || !client.hasSubscription("bridge_keepalive")) {
    return e.json(200, { sent: false });
  }
  client.send(new SubscriptionMessage({ name: "bridge_keepalive", data: JSON.stringify({ ping: nonce }) }));
  return e.json(200, { sent: true });
}, $apis.requireSuperuserAuth(), $apis.skipSuccessActivityLog());
