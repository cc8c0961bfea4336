//! Plan ceilings, clamp-versus-refuse, stack counts and admission order.

use std::collections::BTreeSet;

use cf_bridge::quota::{Ceiling, Granted, PlanTier, QuotaError, TemplateDefaults, ceiling, check};

/// The instances that fit under the stack limit: the first `limit` ids in the given (creation) order, as
/// the reconciler admits them. `None` admits all. Duplicate ids count once.
fn admitted<S: AsRef<str>>(ids_in_creation_order: &[S], limit: Option<u32>) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for id in ids_in_creation_order {
        if let Some(limit) = limit
            && seen.len() >= limit as usize
        {
            break;
        }
        seen.insert(id.as_ref().to_string());
    }
    seen
}

fn sovereign() -> Ceiling {
    Ceiling {
        max_stacks: None,
        cpu: 8.0,
        mem_mb: 16384,
    }
}

const DEFAULTS: TemplateDefaults = TemplateDefaults { cpu: 0.5, mem_mb: 512 };

#[test]
fn plan_table() {
    assert_eq!(
        ceiling(PlanTier::Starter, 0, &sovereign()),
        Ceiling {
            max_stacks: Some(2),
            cpu: 0.25,
            mem_mb: 256
        }
    );
    assert_eq!(
        ceiling(PlanTier::Team, 0, &sovereign()),
        Ceiling {
            max_stacks: Some(10),
            cpu: 0.5,
            mem_mb: 512
        }
    );
    assert_eq!(
        ceiling(PlanTier::Business, 0, &sovereign()),
        Ceiling {
            max_stacks: Some(25),
            cpu: 1.0,
            mem_mb: 1024
        }
    );
    assert_eq!(ceiling(PlanTier::Sovereign, 0, &sovereign()), sovereign());
}

#[test]
fn max_stacks_override_replaces_the_count_only() {
    assert_eq!(
        ceiling(PlanTier::Starter, 5, &sovereign()),
        Ceiling {
            max_stacks: Some(5),
            cpu: 0.25,
            mem_mb: 256
        }
    );
    assert_eq!(ceiling(PlanTier::Sovereign, 3, &sovereign()).max_stacks, Some(3));
    let c = ceiling(PlanTier::Starter, 1, &sovereign());
    let err = check(PlanTier::Starter, &c, 0.0, 0, DEFAULTS, 1).expect_err("over override");
    assert_eq!(
        err.to_string(),
        "quota exceeded: plan starter allows 1 stack (tenant max_stacks override)"
    );
}

#[test]
fn third_starter_stack_is_refused_then_accepted_after_upgrade() {
    let c = ceiling(PlanTier::Starter, 0, &sovereign());
    let err = check(PlanTier::Starter, &c, 0.0, 0, DEFAULTS, 2).expect_err("third stack");
    assert_eq!(err.to_string(), "quota exceeded: plan starter allows 2 stacks");
    assert!(matches!(
        err,
        QuotaError::Stacks {
            limit: 2,
            overridden: false,
            ..
        }
    ));
    let c = ceiling(PlanTier::Team, 0, &sovereign());
    let granted = check(PlanTier::Team, &c, 0.0, 0, DEFAULTS, 2).expect("team allows it");
    assert_eq!(granted, Granted { cpu: 0.5, mem_mb: 512 });

    let ids = ["a1", "b2", "c3"];
    let starter = admitted(&ids, ceiling(PlanTier::Starter, 0, &sovereign()).max_stacks);
    assert!(starter.contains("a1") && starter.contains("b2") && !starter.contains("c3"));
    let team = admitted(&ids, ceiling(PlanTier::Team, 0, &sovereign()).max_stacks);
    assert_eq!(team.len(), 3);
}

#[test]
fn defaults_are_clamped_explicit_requests_refused() {
    let c = ceiling(PlanTier::Starter, 0, &sovereign());
    assert_eq!(
        check(PlanTier::Starter, &c, 0.0, 0, DEFAULTS, 0).expect("clamped"),
        Granted { cpu: 0.25, mem_mb: 256 }
    );
    assert_eq!(
        check(PlanTier::Starter, &c, 0.1, 128, DEFAULTS, 0).expect("within"),
        Granted { cpu: 0.1, mem_mb: 128 }
    );
    assert_eq!(
        check(PlanTier::Starter, &c, 0.25, 256, DEFAULTS, 0).expect("at ceiling"),
        Granted { cpu: 0.25, mem_mb: 256 }
    );
    let small = TemplateDefaults { cpu: 0.1, mem_mb: 64 };
    assert_eq!(
        check(PlanTier::Starter, &c, 0.0, 0, small, 0).expect("defaults"),
        Granted { cpu: 0.1, mem_mb: 64 }
    );

    let err = check(PlanTier::Starter, &c, 1.0, 0, DEFAULTS, 0).expect_err("cpu over");
    let msg = err.to_string();
    assert!(
        msg.contains("requested 1 CPU but plan starter allows at most 0.25 CPU")
            && msg.contains("refused, not clamped"),
        "{msg}"
    );
    let err = check(PlanTier::Starter, &c, 0.0, 2048, DEFAULTS, 0).expect_err("mem over");
    assert!(
        err.to_string()
            .contains("requested 2048 MB memory but plan starter allows at most 256 MB"),
        "{err}"
    );
    for bad in [-1.0, f64::NAN, f64::INFINITY] {
        assert!(matches!(
            check(PlanTier::Starter, &c, bad, 0, DEFAULTS, 0),
            Err(QuotaError::InvalidCpu(_))
        ));
    }
}

#[test]
fn sovereign_is_unlimited_in_count_and_uses_configured_ceilings() {
    let c = ceiling(PlanTier::Sovereign, 0, &sovereign());
    let g = check(PlanTier::Sovereign, &c, 4.0, 8192, DEFAULTS, 10_000).expect("unlimited");
    assert_eq!(g, Granted { cpu: 4.0, mem_mb: 8192 });
    assert!(check(PlanTier::Sovereign, &c, 9.0, 0, DEFAULTS, 0).is_err());
    assert_eq!(admitted(&["x", "y", "z"], None).len(), 3);
}

#[test]
fn admitted_is_deterministic_and_ignores_duplicates() {
    let ids = vec![
        "first".to_string(),
        "first".to_string(),
        "second".to_string(),
        "third".to_string(),
    ];
    let a = admitted(&ids, Some(2));
    assert_eq!(a.into_iter().collect::<Vec<_>>(), vec!["first", "second"]);
    assert!(admitted(&ids, Some(0)).is_empty());
    assert!(admitted::<&str>(&[], Some(2)).is_empty());
}

#[test]
fn plan_names_parse_and_print() {
    for (s, p) in [
        ("starter", PlanTier::Starter),
        ("Team", PlanTier::Team),
        (" business ", PlanTier::Business),
        ("SOVEREIGN", PlanTier::Sovereign),
    ] {
        let parsed: PlanTier = s.parse().expect("known plan");
        assert_eq!(parsed, p);
        assert_eq!(parsed.to_string(), s.trim().to_ascii_lowercase());
    }
    let err = "enterprise".parse::<PlanTier>().expect_err("unknown");
    assert!(err.to_string().contains("unknown plan tier \"enterprise\""), "{err}");
}
