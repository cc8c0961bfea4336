//! Gives the bridge the commit it was built from (`cf_bridge_build_info{git_sha}`): `CF_BRIDGE_GIT_SHA`
//! when the builder sets it (an image built without `.git`), else `git rev-parse HEAD`; none outside a
//! checkout. Reruns only when the commit can have changed.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !text.is_empty()).then_some(text)
}

fn main() {
    println!("cargo:rerun-if-env-changed=CF_BRIDGE_GIT_SHA");
    let sha = std::env::var("CF_BRIDGE_GIT_SHA")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| git(&["rev-parse", "HEAD"]));
    // HEAD, the branch it names and packed-refs: whichever moves when a commit is made or checked out.
    // A path that does not exist would make every build rerun this script, so only existing ones count.
    let branch = git(&["symbolic-ref", "-q", "HEAD"]);
    for name in ["HEAD", "packed-refs"].into_iter().chain(branch.as_deref()) {
        if let Some(p) = git(&["rev-parse", "--git-path", name])
            && std::path::Path::new(&p).exists()
        {
            println!("cargo:rerun-if-changed={p}");
        }
    }
    if let Some(sha) = sha.filter(|s| s.len() <= 64 && s.chars().all(|c| c.is_ascii_hexdigit())) {
        println!("cargo:rustc-env=CF_BRIDGE_GIT_SHA={sha}");
    }
}
