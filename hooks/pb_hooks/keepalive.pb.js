/// <reference path="../pb_data/types.d.ts" />
// Every minute, sends {"ts": ...} to realtime clients subscribed to "bridge_keepalive" (cf-bridge).
// It resets PocketBase's idle timer and feeds the bridge's read watchdog (90 s by default).
cronAdd("bridge_keepalive", "* * * * *", () => {
  const msg = new SubscriptionMessage({
    name: "bridge_keepalive",
    data: JSON.stringify({ ts: new Date().toISOString() }),
  });
  const clients = $app.subscriptionsBroker().clients();
  for (const id in clients) {
    if (clients[id].hasSubscription("bridge_keepalive")) clients[id].send(msg);
  }
});
