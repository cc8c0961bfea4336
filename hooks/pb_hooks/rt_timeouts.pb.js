/// <reference path="../pb_data/types.d.ts" />
// Longer realtime timeouts for superuser connections (cf-bridge sends its token on GET /api/realtime).
// Defaults are 5 min idle and 30 min maximum; each forced reconnect costs the bridge a resync.
// Durations are Go time.Duration values, in nanoseconds.
onRealtimeConnectRequest((e) => {
  if (e.auth && e.auth.isSuperuser()) {
    const MIN = 60 * 1000 * 1000 * 1000;
    e.idleTimeout = 10 * MIN;
    e.maxTimeout = 6 * 60 * MIN;
  }
  e.next();
});
