//! The operator page's "Templates and rollouts" panel: each template's kept versions, the recent rollouts,
//! the form that starts one and a rollback button per template. Pure markup from the in-memory templates
//! and the journal; everything shown is escaped.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use super::views::{esc, sel};
use crate::rollout::{Item, Kind, MAX_BATCH, Rollout};

/// A template as the panel shows it.
pub struct TemplateVersions {
    pub name: String,
    /// The newest, the one in the templates directory that new instances get.
    pub newest: String,
    /// Every version the bridge keeps, the newest among them.
    pub kept: Vec<String>,
}

fn versions(items: &[Item], of: fn(&Item) -> &str) -> String {
    let set: BTreeSet<&str> = items
        .iter()
        .map(of)
        .map(|v| if v.is_empty() { "?" } else { v })
        .collect();
    esc(&set.into_iter().collect::<Vec<_>>().join(", "))
}

fn rollout_row(r: &Rollout) -> String {
    let to = match (&r.kind, &r.to_version) {
        (Kind::Rollout, Some(v)) => esc(v),
        _ => versions(&r.items, |i| &i.to),
    };
    let failure = r
        .failure
        .as_ref()
        .map(|f| format!("batch {}, {}: {}", f.batch, esc(&f.instance), esc(&f.reason)))
        .unwrap_or_default();
    let state = sel(&Some(r.state));
    format!(
        "<tr id=\"rollout-{id}\"><td>{id}</td><td>{}</td><td>{}</td><td>{}</td><td>{to}</td>\
         <td class=\"batches\">{} of {}</td><td class=\"state {state}\">{state}</td><td class=\"reason\">{failure}</td></tr>",
        esc(&r.template),
        sel(&Some(r.kind)),
        versions(&r.items, |i| &i.from),
        r.batches_done,
        r.batches_total(),
        id = r.id,
    )
}

/// The panel; `templates` sorted by name, `rollouts` newest first.
pub fn panel(templates: &[TemplateVersions], rollouts: &[Rollout]) -> String {
    let mut b = String::from(
        "<h2>Templates and rollouts</h2><table id=\"templates\"><tr><th>template</th><th>newest</th>\
         <th>versions kept</th><th></th></tr>",
    );
    let mut options = String::new();
    for t in templates {
        let name = esc(&t.name);
        let _ = write!(
            b,
            "<tr><td>{name}</td><td>{}</td><td>{}</td><td><form method=\"post\" action=\"/admin/ui/rollout\">\
             <input type=\"hidden\" name=\"template\" value=\"{name}\"><input type=\"hidden\" name=\"op\" \
             value=\"rollback\"><button>Roll back the latest rollout</button></form></td></tr>",
            esc(&t.newest),
            esc(&t.kept.join(", "))
        );
        let _ = write!(options, "<option value=\"{name}\">{name}</option>");
    }
    let _ = write!(
        b,
        "</table><form method=\"post\" action=\"/admin/ui/rollout\" id=\"rollout-form\">\
         <input type=\"hidden\" name=\"op\" value=\"rollout\">\
         <label>template <select name=\"template\">{options}</select></label> \
         <label>to version <input name=\"to\" placeholder=\"newest\" size=\"8\"></label> \
         <label>batch <input name=\"batch\" type=\"number\" min=\"1\" max=\"{MAX_BATCH}\" size=\"3\"></label> \
         <label>tenant slug <input name=\"tenant\" placeholder=\"every tenant\" size=\"12\"></label> \
         <button type=\"submit\">Start rollout</button></form>\
         <table id=\"rollouts\"><tr><th>id</th><th>template</th><th>kind</th><th>from</th><th>to</th>\
         <th>batches done</th><th>state</th><th>failure</th></tr>"
    );
    for r in rollouts {
        b.push_str(&rollout_row(r));
    }
    b.push_str("</table>");
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::{Failure, State};

    #[test]
    fn names_versions_and_reasons_never_become_markup() {
        let hostile = "<script>alert(1)</script>";
        let r = Rollout {
            id: 7,
            template: hostile.into(),
            kind: Kind::Rollout,
            to_version: Some("<b>2</b>".into()),
            tenant: None,
            batch_size: 1,
            items: vec![Item {
                instance: "i1".into(),
                life: String::new(),
                from: "<i>1</i>".into(),
                to: "<b>2</b>".into(),
            }],
            batches_started: 1,
            batches_done: 0,
            state: State::Failed,
            failure: Some(Failure {
                batch: 1,
                instance: "i1".into(),
                reason: "<img src=x>".into(),
            }),
            skipped: Vec::new(),
            started_at: String::new(),
            finished_at: None,
        };
        let t = TemplateVersions {
            name: hostile.into(),
            newest: "<b>2</b>".into(),
            kept: vec!["<i>1</i>".into(), "<b>2</b>".into()],
        };
        let html = panel(&[t], &[r]);
        for raw in ["<script", "<b>", "<i>", "<img"] {
            assert!(!html.contains(raw), "{raw} reached the page: {html}");
        }
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{html}");
        assert!(html.contains("<td class=\"batches\">0 of 1</td>"), "{html}");
        assert!(html.contains("class=\"state failed\""), "{html}");
    }
}
