#!/usr/bin/env python3
"""cf-bridge demo: a real PocketBase (schema + hooks), coolify-sim and the bridge, end to end.

Creates a user, a tenant and two bot instances, and shows them go from deploying to running with their
Coolify ids and deploy logs. Ctrl-C stops everything.

Changes reach the bridge by realtime and resync (the default); `--webhook` also has PocketBase's hooks post
signed webhooks to it (both sides then share a secret made by `cf-bridge secret`).
"""
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# CF_DEMO_WORK: where the demo keeps its data and logs (the test that runs the demo uses a temp dir).
WORK = os.environ.get("CF_DEMO_WORK") or os.path.join(ROOT, ".local", "demo")
EMAIL, PASSWORD = "bridge@demo.local", "demo-superuser-password"
SIM_TOKEN = "1|demo-coolify-token"
ADMIN_TOKEN = "demo-admin-token-0123456789"
procs = []


def ephemeral_low():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def free_port():
    # Below the kernel's ephemeral range: a port from it (what binding port 0 gives) may be handed to any
    # outgoing connection on the machine before the process that is to listen on it binds it.
    low = ephemeral_low()
    candidates = [random.randrange(10000, low) for _ in range(64)] if low > 11000 else []
    for port in candidates + [0]:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]


def call(method, url, body=None, token=None, timeout=10):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    req.add_header("Accept", "application/json")
    if token:
        req.add_header("Authorization", token)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
            return r.status, (json.loads(raw) if raw else None)
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, json.loads(raw)
        except ValueError:
            return e.code, raw.decode(errors="replace")


def wait_http(url, what, proc, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            fail(f"{what} exited during start-up; the end of its log ({proc.log_path}):\n"
                 + log_tail(proc.log_path))
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except Exception:
            time.sleep(0.2)
    fail(f"{what} did not start within {timeout}s; the end of its log ({proc.log_path}):\n"
         + log_tail(proc.log_path))


def fail(message):
    print(message, file=sys.stderr)
    stop_all(code=1)


def log_tail(path, lines=20):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError as e:
        return f"(cannot read it: {e})\n"


def start(cmd, log, env=None, stdout_pipe=False):
    f = open(os.path.join(WORK, log), "w")
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE if stdout_pipe else f, stderr=f,
                         env={**os.environ, **(env or {})}, cwd=ROOT, start_new_session=True)
    p.log_path = f.name
    procs.append(p)
    return p


def stop_all(*_, code=0):
    print("\nstopping everything ...")
    for p in reversed(procs):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in reversed(procs):
        try:
            p.wait(timeout=25)
        except subprocess.TimeoutExpired:
            p.kill()
    print("stopped.")
    sys.exit(code)


def main():
    args = [a for a in sys.argv[1:] if a != "--webhook"]
    webhook = "--webhook" in sys.argv[1:]
    pb_bin = args[0]
    target = args[1]
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    signal.signal(signal.SIGINT, stop_all)
    signal.signal(signal.SIGTERM, stop_all)

    pb_port, sim_port, bridge_port = free_port(), free_port(), free_port()
    pb_url, bridge_url = f"http://127.0.0.1:{pb_port}", f"http://127.0.0.1:{bridge_port}"
    secret = subprocess.check_output([f"{target}/cf-bridge", "secret"], text=True).strip() if webhook else None

    data = os.path.join(WORK, "pb_data")
    subprocess.run([pb_bin, "superuser", "upsert", EMAIL, PASSWORD, "--dir", data],
                   check=True, stdout=subprocess.DEVNULL)
    pb = start([pb_bin, "serve", "--http", f"127.0.0.1:{pb_port}", "--dir", data,
                "--migrationsDir", os.path.join(ROOT, "hooks", "pb_migrations"),
                "--hooksDir", os.path.join(ROOT, "hooks", "pb_hooks"), "--automigrate=false"],
               "pocketbase.log",
               env={"CF_BRIDGE_WEBHOOK_URL": f"{bridge_url}/hooks/pocketbase",
                    "CF_BRIDGE_WEBHOOK_SECRET": secret} if webhook else {})
    wait_http(f"{pb_url}/api/health", "PocketBase", pb)
    print(f"PocketBase 0.40.6     {pb_url}/_/   (superuser {EMAIL} / {PASSWORD})")

    sim = start([f"{target}/coolify-sim", "--bind", f"127.0.0.1:{sim_port}", "--token", SIM_TOKEN,
                 "--start-delay-ms", "1500", "--running-delay-ms", "1500", "--delete-delay-ms", "1000"],
                "coolify-sim.log")
    sim_url = f"http://127.0.0.1:{sim_port}"
    wait_http(f"{sim_url}/api/health", "coolify-sim", sim)
    print(f"coolify-sim           {sim_url}/_sim/state")

    env = {
        "CF_BRIDGE__POCKETBASE__URL": pb_url,
        "CF_BRIDGE__POCKETBASE__SUPERUSER_EMAIL": EMAIL,
        "CF_BRIDGE__POCKETBASE__SUPERUSER_PASSWORD": PASSWORD,
        "CF_BRIDGE__COOLIFY__URL": sim_url,
        "CF_BRIDGE__COOLIFY__TOKEN": SIM_TOKEN,
        "CF_BRIDGE__ADMIN__TOKEN": ADMIN_TOKEN,
        "CF_BRIDGE__ADMIN__BIND": f"127.0.0.1:{bridge_port}",
        "CF_BRIDGE__JOURNAL__PATH": os.path.join(WORK, "journal.db"),
        "CF_BRIDGE__DOMAINS__BASE_DOMAIN": "bots.demo.local",
        "CF_BRIDGE__ROUTER__BASE_URL": "https://router.demo.local",
        "CF_BRIDGE__LOG__FORMAT": "pretty",
        "CF_BRIDGE__SECRETS__KEY": "demo-secrets-key-0123456789abcdef012345",
        "CF_BRIDGE__SECRETS__STORE_PATH": os.path.join(WORK, "secrets.bin"),
        "CF_BRIDGE__RECONCILE__HEALTH_POLL_INTERVAL_SECS": "5",
    }
    if webhook:
        env["CF_BRIDGE__WEBHOOK__SECRET"] = secret
    cfg_path = os.path.join(WORK, "cf-bridge.toml")
    with open(cfg_path, "w") as f:
        f.write("# demo: every setting comes from CF_BRIDGE__* environment variables\n")
    cfg = ["--config", cfg_path]
    subprocess.run([f"{target}/cf-bridge", *cfg, "check-config"], env={**os.environ, **env},
                   check=True, stdout=subprocess.DEVNULL)
    print("cf-bridge check-config: ok")
    print("intake                " + ("webhooks, realtime and resync (--webhook)" if webhook
                                      else "realtime and resync (the default; --webhook adds signed webhooks)"))
    subprocess.run([f"{target}/cf-bridge", *cfg, "templates", "sync"], env={**os.environ, **env}, check=True)
    bridge = start([f"{target}/cf-bridge", *cfg, "serve"], "cf-bridge.log", env=env)
    wait_http(f"{bridge_url}/healthz", "cf-bridge", bridge)
    print(f"cf-bridge             {bridge_url}/admin/ui   (admin token {ADMIN_TOKEN})")
    print(f"logs                  {WORK}/*.log\n")

    _, auth = call("POST", f"{pb_url}/api/collections/_superusers/auth-with-password",
                   {"identity": EMAIL, "password": PASSWORD})
    su = auth["token"]
    _, user = call("POST", f"{pb_url}/api/collections/users/records",
                   {"email": "ada@demo.local", "password": "ada-password-123",
                    "passwordConfirm": "ada-password-123"}, su)
    _, tenant = call("POST", f"{pb_url}/api/collections/tenants/records",
                     {"name": "Acme Robotics", "slug": "acme", "user": user["id"], "status": "active",
                      "plan_tier": "team"}, su)
    print(f"created tenant acme ({tenant['id']}) for user ada@demo.local")
    _, templates = call("GET", f"{pb_url}/api/collections/bot_templates/records?perPage=50", token=su)
    by_name = {t["name"]: t for t in templates["items"]}
    wanted = [("support-bot", "telegram-bot"), ("research-agent", "openclaw-agent")]
    ids = []
    for sub, tname in wanted:
        t = by_name[tname]
        code, inst = call("POST", f"{pb_url}/api/collections/bot_instances/records",
                          {"tenant": tenant["id"], "template": t["id"], "name": sub, "subdomain": sub,
                           "desired_state": "running", "config": {}}, su)
        if code != 200:
            fail(f"creating instance {sub} failed: {inst}")
        ids.append(inst["id"])
        print(f"created instance {sub} ({inst['id']}) from template {tname}")
        required = t.get("required_secrets") or []
        if required:
            values = {k: f"demo-{k.lower()}-value" for k in required}
            call("PUT", f"{bridge_url}/admin/instances/{inst['id']}/secrets", values, f"Bearer {ADMIN_TOKEN}")
            print(f"  set secrets {', '.join(required)} through the admin API (values never stored in PocketBase)")

    print("\nwatching the instances (Ctrl-C stops everything):")
    last = {}
    deadline = time.time() + 90
    all_running = False
    while True:
        rows = []
        for i in ids:
            _, r = call("GET", f"{pb_url}/api/collections/bot_instances/records/{i}", token=su)
            rows.append(r)
            line = (r["status"], r.get("coolify_service_id"), r.get("domain"), r.get("error_message"),
                    r.get("pending_reason"))
            if last.get(i) != line:
                last[i] = line
                print(f"  {r['name']:<15} status={r['status'] or '-':<10} coolify_service_id={r.get('coolify_service_id') or '-':<26}"
                      f" domain={r.get('domain') or '-'} {('error: ' + r['error_message']) if r.get('error_message') else ''}"
                      f"{r['pending_reason'] if r.get('pending_reason') else ''}")
        if all(r["status"] == "running" for r in rows):
            all_running = True
            break
        if time.time() > deadline:
            print("not all instances reached running within 90 s; see the logs above and in", WORK)
            break
        time.sleep(0.5)

    _, t = call("GET", f"{pb_url}/api/collections/tenants/records/{tenant['id']}", token=su)
    print(f"\ntenant acme -> Coolify project {t['coolify_project_uuid']}")
    _, logs = call("GET", f"{pb_url}/api/collections/deploy_logs/records?perPage=50&sort=created", token=su)
    print("deploy_logs:")
    for row in logs["items"]:
        print(f"  {row['created']}  {row['action']:<15} {row['status']:<8} {row['duration_ms']:>6} ms  {row['message']}")
    _, state = call("GET", f"{sim_url}/_sim/state")
    services = state.get("services", []) if isinstance(state, dict) else []
    print(f"coolify-sim holds {len(services)} service(s): "
          + ", ".join(f"{s.get('name')}={s.get('status')}" for s in services))
    print("\nWhere to look:")
    print(f"  PocketBase admin UI   {pb_url}/_/   ({EMAIL} / {PASSWORD})")
    print(f"  simulator state       {sim_url}/_sim/state")
    print(f"  operator page         {bridge_url}/admin/ui   (token {ADMIN_TOKEN})")
    print(f"  metrics               {bridge_url}/metrics")
    print("Edit an instance in the PocketBase UI (desired_state, config) and watch the bridge follow. Ctrl-C to stop.")
    # CF_DEMO_EXIT: stop after showing the result, with status 1 unless every instance reached running.
    if os.environ.get("CF_DEMO_EXIT"):
        stop_all(code=0 if all_running else 1)
    while True:
        time.sleep(1)


if __name__ == "__main__":
    try:
        main()
    except subprocess.CalledProcessError as e:
        # The program and its command, not the whole line: `superuser upsert` carries a password.
        what = [os.path.basename(e.cmd[0])] + [a for a in e.cmd[1:] if not a.startswith("-") and os.sep not in a][:1]
        fail(f"{' '.join(what)} failed with exit status {e.returncode}")
