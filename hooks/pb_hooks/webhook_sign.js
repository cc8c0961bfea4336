// Shared by webhook.pb.js (deliberately not *.pb.js, so PocketBase does not load it as a hook file).
// Hook handlers run in isolated runtimes and cannot see a file's top-level code: require() this
// module inside each handler.
//
// Standard Webhooks signing: webhook-signature = "v1," + base64(HMAC-SHA256(key, id + "." + ts + "." + body)).
// $security.hs256 takes the key as a string and returns hex, so the whsec_ key is decoded to a string
// (cf-bridge generates keys of printable ASCII, which survive that) and the hex is re-encoded as base64.
const B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

// "whsec_<base64>" -> key string, or null if malformed or not printable ASCII.
function decodeKey(secret) {
  if (typeof secret !== "string" || secret.indexOf("whsec_") !== 0) return null;
  const s = secret.slice(6).replace(/=+$/, "");
  let bits = 0, acc = 0, out = "";
  for (let i = 0; i < s.length; i++) {
    const v = B64.indexOf(s.charAt(i));
    if (v < 0) return null;
    acc = (acc << 6) | v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      const byte = (acc >> bits) & 0xff;
      if (byte < 0x21 || byte > 0x7e) return null;
      out += String.fromCharCode(byte);
    }
  }
  return out.length >= 24 ? out : null;
}

function hexToBase64(hex) {
  const bytes = [];
  for (let i = 0; i + 1 < hex.length; i += 2) bytes.push(parseInt(hex.substr(i, 2), 16));
  let out = "";
  for (let i = 0; i < bytes.length; i += 3) {
    const n = (bytes[i] << 16) | ((bytes[i + 1] || 0) << 8) | (bytes[i + 2] || 0);
    out += B64.charAt((n >> 18) & 63) + B64.charAt((n >> 12) & 63);
    out += i + 1 < bytes.length ? B64.charAt((n >> 6) & 63) : "=";
    out += i + 2 < bytes.length ? B64.charAt(n & 63) : "=";
  }
  return out;
}

// Fields that only cf-bridge (or PocketBase itself) writes, per collection: the bridge-owned fields of
// the migrations' API rules, and the autodates. A field missing here only costs an extra webhook.
const NOT_PERSON_OWNED = {
  bot_instances: [
    "status", "coolify_service_id", "coolify_project_id", "error_message", "last_healthy_at",
    "secrets_hash", "applied_hash", "domain", "router_key_id", "pending_reason", "changed_by", "created", "updated",
    "retained_until",
    "template_version",
  ],
  tenants: ["coolify_project_uuid", "bridge_error", "changed_by", "created", "updated"],
};

// The delivery settings, or null when delivery is off (unset; webhook.pb.js then registers no handler) or
// the secret is unusable (logged).
function settings(e) {
  const url = $os.getenv("CF_BRIDGE_WEBHOOK_URL");
  const secret = $os.getenv("CF_BRIDGE_WEBHOOK_SECRET");
  if (!url || !secret) {
    e.app.logger().info("cf-bridge webhook skipped: CF_BRIDGE_WEBHOOK_URL or CF_BRIDGE_WEBHOOK_SECRET is unset");
    return null;
  }
  const key = decodeKey(secret);
  if (key === null) {
    e.app.logger().error("cf-bridge webhook skipped: CF_BRIDGE_WEBHOOK_SECRET is not a whsec_ secret of printable ASCII (use `cf-bridge secret`)");
    return null;
  }
  return { url: url, key: key };
}

module.exports = {
  // True when an update changed a field a person owns (compared with the record as it was in the
  // database). The bridge's own write-backs change only its fields: they are not posted, which spares
  // PocketBase the signing and the POST and the bridge an echo it would settle anyway. Realtime still
  // carries every change. Every field of these collections is single-valued, so getString compares it
  // (JSON fields as their JSON text). When in doubt (the comparison fails), it posts.
  personChanged: (e) => {
    try {
      const skip = NOT_PERSON_OWNED[e.record.collection().name] || [];
      const before = e.record.original();
      const fields = e.record.collection().fields;
      for (let i = 0; i < fields.length; i++) {
        const name = fields[i].getName();
        if (skip.indexOf(name) < 0 && e.record.getString(name) !== before.getString(name)) return true;
      }
      return false;
    } catch (err) {
      e.app.logger().warn("cf-bridge webhook: could not compare with the original, posting", "error", String(err));
      return true;
    }
  },

  // Posts one change to cf-bridge. Never throws for delivery problems: a throwing After*Success
  // hook would turn a committed write into a 400 and suppress the realtime event.
  deliver: (e, action) => {
    const log = e.app.logger();
    const config = settings(e);
    if (config === null) return;
    const url = config.url;
    const key = config.key;
    const collection = e.record.collection().name;
    const body = JSON.stringify({
      event: action,
      collection: collection,
      record: e.record,
      sent_at: new Date().toISOString(),
    });
    const id = "msg_" + $security.randomString(24);
    const ts = String(Math.floor(Date.now() / 1000));
    const signature = "v1," + hexToBase64($security.hs256(id + "." + ts + "." + body, key));
    try {
      const res = $http.send({
        url: url,
        method: "POST",
        body: body,
        timeout: 3, // seconds; the default (120) would stall the API response and the realtime event
        headers: {
          "content-type": "application/json",
          "webhook-id": id,
          "webhook-timestamp": ts,
          "webhook-signature": signature,
        },
      });
      if (res.statusCode < 200 || res.statusCode >= 300) {
        log.warn("cf-bridge webhook refused", "status", res.statusCode, "collection", collection, "recordId", e.record.id, "webhookId", id);
      }
    } catch (err) {
      log.error("cf-bridge webhook failed", "error", String(err), "collection", collection, "recordId", e.record.id, "webhookId", id);
    }
  },
};

// For `cf-bridge doctor` (doctor.pb.js): what this PocketBase would sign, so the bridge can tell whether both
// sides hold the same secret without either showing it.
module.exports.check = (id, ts, body) => {
  const url = $os.getenv("CF_BRIDGE_WEBHOOK_URL");
  const secret = $os.getenv("CF_BRIDGE_WEBHOOK_SECRET");
  const key = secret ? decodeKey(secret) : null;
  return {
    url: url || "",
    secret_set: !!secret,
    secret_valid: key !== null,
    signature: key === null ? "" : "v1," + hexToBase64($security.hs256(id + "." + ts + "." + body, key)),
  };
};
