//! Injected faults: latency, 5xx, 429 storms, lost responses, crashed containers.

use rand::Rng;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Storm {
    /// How many 429s to answer before letting requests through again.
    pub count: u32,
    /// Seconds sent in Retry-After.
    pub retry_after: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// Endpoint template such as "POST /services", or "*" for every API route.
    #[serde(default = "any_route")]
    pub route: String,
    /// Probability of answering 500 without applying anything.
    #[serde(default)]
    pub error_rate: f64,
    #[serde(default)]
    pub latency_ms: u64,
    #[serde(default)]
    pub storm_429: Option<Storm>,
    /// Apply the change, then break the response so the client sees a transport error.
    #[serde(default)]
    pub lost_response: bool,
    /// Probability that `lost_response` hits a given request (default 1).
    #[serde(default = "one")]
    pub lost_rate: f64,
    /// Makes this service's containers die (applied once when the fault is posted).
    #[serde(default)]
    pub crash_service: Option<String>,
}

fn any_route() -> String {
    "*".into()
}

fn one() -> f64 {
    1.0
}

/// What the faults decided for one request.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Effects {
    pub latency_ms: u64,
    pub throttle_retry_after: Option<u64>,
    pub server_error: bool,
    pub lose_response: bool,
}

/// Rolls the dice for one request to `template`, consuming storm counts.
pub fn effects(faults: &mut [Fault], template: &str) -> Effects {
    let mut fx = Effects::default();
    let mut rng = rand::rng();
    for f in faults.iter_mut().filter(|f| f.route == "*" || f.route == template) {
        fx.latency_ms = fx.latency_ms.max(f.latency_ms);
        if fx.throttle_retry_after.is_none()
            && let Some(storm) = f.storm_429.as_mut()
            && storm.count > 0
        {
            storm.count -= 1;
            fx.throttle_retry_after = Some(storm.retry_after);
        }
        if f.error_rate > 0.0 && rng.random_bool(f.error_rate.clamp(0.0, 1.0)) {
            fx.server_error = true;
        }
        if f.lost_response && rng.random_bool(f.lost_rate.clamp(0.0, 1.0)) {
            fx.lose_response = true;
        }
    }
    fx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storms_are_consumed_and_routes_matched() {
        let mut faults: Vec<Fault> = vec![
            serde_json::from_str(r#"{"route":"POST /services","storm_429":{"count":2,"retry_after":1}}"#).unwrap(),
            serde_json::from_str(r#"{"route":"*","latency_ms":5}"#).unwrap(),
        ];
        assert_eq!(effects(&mut faults, "GET /services").throttle_retry_after, None);
        assert_eq!(effects(&mut faults, "GET /services").latency_ms, 5);
        assert_eq!(effects(&mut faults, "POST /services").throttle_retry_after, Some(1));
        assert_eq!(effects(&mut faults, "POST /services").throttle_retry_after, Some(1));
        assert_eq!(effects(&mut faults, "POST /services").throttle_retry_after, None);
    }

    #[test]
    fn lost_response_defaults_to_always() {
        let mut faults: Vec<Fault> =
            vec![serde_json::from_str(r#"{"route":"POST /projects","lost_response":true}"#).unwrap()];
        assert!(effects(&mut faults, "POST /projects").lose_response);
        assert!(!effects(&mut faults, "GET /projects").lose_response);
        assert!(serde_json::from_str::<Fault>(r#"{"bogus":1}"#).is_err());
    }
}
