//! Tenants' custom domains, checked as a DNS admin would: IDNA (UTS 46, STD3 rules) to the ASCII form,
//! at most 253 characters, labels of 1 to 63 letters, digits and inner hyphens, at least two labels (a
//! bare top-level domain is no one's), no wildcard, no IP address, and nothing of the platform's own base
//! domain. A tenant's instances are served at `<subdomain>.<domain>`, which must fit the same limits.

/// Why a custom domain is refused (the message names the rule, never another tenant).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostnameError {
    #[error("is empty")]
    Empty,
    #[error("is a wildcard: set the domain itself; its instances are served at <subdomain>.<domain>")]
    Wildcard,
    #[error("is not a valid internationalized domain name")]
    Idna,
    #[error("is longer than 253 characters")]
    TooLong,
    #[error("has a label that is empty or longer than 63 characters")]
    LabelLength,
    #[error("has a label with a character other than a letter, a digit or an inner hyphen")]
    LabelCharacters,
    #[error("is a top-level domain: a tenant's domain needs at least two labels")]
    TopLevel,
    #[error("is an IP address, not a domain")]
    IpAddress,
    #[error("is the platform's own domain or under it")]
    Platform,
    #[error("leaves no room for an instance's subdomain within 253 characters")]
    NoRoomForSubdomains,
}

/// The longest subdomain (a DNS label) an instance may have.
const MAX_LABEL: usize = 63;

/// The ASCII (A-label) form of a tenant's domain, checked; `base_domain` is the platform's own.
pub fn tenant_domain(input: &str, base_domain: &str) -> Result<String, HostnameError> {
    let trimmed = input.trim();
    // A fully qualified name may end with the root's dot.
    let name = trimmed.strip_suffix('.').unwrap_or(trimmed);
    if name.is_empty() {
        return Err(HostnameError::Empty);
    }
    if name.contains('*') {
        return Err(HostnameError::Wildcard);
    }
    if name.parse::<std::net::IpAddr>().is_ok() {
        return Err(HostnameError::IpAddress);
    }
    let ascii = idna::domain_to_ascii_strict(name).map_err(|_| HostnameError::Idna)?;
    check_ascii(&ascii)?;
    let base = base_domain.trim_end_matches('.').to_ascii_lowercase();
    if ascii == base || ascii.ends_with(&format!(".{base}")) {
        return Err(HostnameError::Platform);
    }
    // `<subdomain>.<domain>` must fit 253 characters for the longest subdomain.
    if ascii.len() + 1 + MAX_LABEL > 253 {
        return Err(HostnameError::NoRoomForSubdomains);
    }
    Ok(ascii)
}

/// The LDH rules on an ASCII name (what IDNA's strict mode checks as well; kept here so the rule does not
/// depend on a library's options).
fn check_ascii(ascii: &str) -> Result<(), HostnameError> {
    if ascii.len() > 253 {
        return Err(HostnameError::TooLong);
    }
    let labels: Vec<&str> = ascii.split('.').collect();
    for label in &labels {
        if label.is_empty() || label.len() > MAX_LABEL {
            return Err(HostnameError::LabelLength);
        }
        let ldh = label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !ldh || label.starts_with('-') || label.ends_with('-') {
            return Err(HostnameError::LabelCharacters);
        }
    }
    if labels.len() < 2 {
        return Err(HostnameError::TopLevel);
    }
    // A last label of digits only is an address (or no name at all), never a top-level domain.
    if labels.last().is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit())) {
        return Err(HostnameError::IpAddress);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "bots.example.com";

    #[test]
    fn good_domains_come_back_in_ascii_form() {
        for (input, ascii) in [
            ("acme.example", "acme.example"),
            ("Bots.ACME.example.", "bots.acme.example"),
            ("  bots.acme.co.uk ", "bots.acme.co.uk"),
            ("bücher.example", "xn--bcher-kva.example"),
            ("xn--bcher-kva.example", "xn--bcher-kva.example"),
            ("a-b.c0.example", "a-b.c0.example"),
            ("example.com", "example.com"),
        ] {
            assert_eq!(tenant_domain(input, BASE).as_deref(), Ok(ascii), "{input}");
        }
    }

    #[test]
    fn bad_domains_are_refused_with_the_rule_they_break() {
        use HostnameError::*;
        let long_label = format!("{}.example", "a".repeat(64));
        let long_name = format!("{}.example", ["abcdefghij"; 24].join("."));
        let no_room = format!("{}.example", ["abcdefghij"; 17].join("."));
        for (input, err) in [
            ("", Empty),
            (" . ", Empty),
            ("*.acme.example", Wildcard),
            ("acme", TopLevel),
            ("com.", TopLevel),
            ("192.168.0.1", IpAddress),
            ("10.0.0.300", IpAddress),
            ("::1", IpAddress),
            ("acme..example", Idna),
            ("-acme.example", Idna),
            ("acme-.example", Idna),
            ("ac_me.example", Idna),
            ("acme example.com", Idna),
            ("https://acme.example", Idna),
            (long_label.as_str(), Idna),
            (long_name.as_str(), Idna),
            (no_room.as_str(), NoRoomForSubdomains),
            ("bots.example.com", Platform),
            ("tenant.bots.example.com", Platform),
        ] {
            assert_eq!(tenant_domain(input, BASE), Err(err.clone()), "{input:?}");
        }
        // Under the base domain's parent is not the platform's.
        assert!(tenant_domain("other.example.com", BASE).is_ok());
    }

    #[test]
    fn ascii_rules_hold_on_their_own() {
        assert_eq!(check_ascii(&"a".repeat(254)), Err(HostnameError::TooLong));
        assert_eq!(check_ascii("a..b"), Err(HostnameError::LabelLength));
        assert_eq!(check_ascii("a_b.c"), Err(HostnameError::LabelCharacters));
        assert_eq!(check_ascii("-a.c"), Err(HostnameError::LabelCharacters));
        assert_eq!(check_ascii("a.b"), Ok(()));
    }
}
