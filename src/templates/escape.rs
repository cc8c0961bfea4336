//! Turning record-derived text into inert YAML.
//!
//! Every value that comes from a record reaches a template only as a complete double-quoted YAML scalar,
//! so a template writes `{{ config.MODEL }}` and can never emit raw record text. The quoting is pure
//! ASCII: anything outside printable ASCII is written as a `\u`/`\U` escape, and `$` is doubled so that
//! neither Compose nor Coolify interpolates record values.

/// Longest record value accepted, in bytes.
pub const MAX_VALUE_BYTES: usize = 4096;

/// Why a record value was refused. The value itself is never carried, only its defect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueDefect {
    TooLong(usize),
    Nul,
    Control(u32),
}

impl std::fmt::Display for ValueDefect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ValueDefect::TooLong(n) => write!(f, "is {n} bytes long (limit {MAX_VALUE_BYTES})"),
            ValueDefect::Nul => f.write_str("contains a NUL character"),
            ValueDefect::Control(c) => write!(f, "contains the control character U+{c:04X}"),
        }
    }
}

/// Tab, newline and carriage return are ordinary text; every other C0/C1 control, DEL and the
/// non-characters U+FFFE/U+FFFF are refused (YAML cannot carry several of them and none belongs in config).
pub fn check_value(s: &str) -> Result<(), ValueDefect> {
    if s.len() > MAX_VALUE_BYTES {
        return Err(ValueDefect::TooLong(s.len()));
    }
    for c in s.chars() {
        let u = c as u32;
        if u == 0 {
            return Err(ValueDefect::Nul);
        }
        let control =
            (u < 0x20 && !matches!(c, '\t' | '\n' | '\r')) || (0x7f..=0x9f).contains(&u) || u == 0xfffe || u == 0xffff;
        if control {
            return Err(ValueDefect::Control(u));
        }
    }
    Ok(())
}

/// The value as a double-quoted YAML scalar with `$` doubled. Call [`check_value`] first.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '$' => out.push_str("$$"),
            ' '..='~' => out.push(c),
            c if (c as u32) <= 0xffff => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push_str(&format!("\\U{:08X}", c as u32)),
        }
    }
    out.push('"');
    out
}

/// Undoes the `$` doubling: what a Compose-interpolated value reads as inside the container.
pub fn unescape_dollars(s: &str) -> String {
    s.replace("$$", "$")
}

/// `^[A-Za-z_][A-Za-z0-9_]{0,63}$`: config keys become env var names.
pub fn is_config_key(key: &str) -> bool {
    let b = key.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

/// A key or name shown in an error: bounded and with control characters escaped.
pub fn shown(s: &str) -> String {
    let cut: String = s.chars().take(64).collect();
    let mut shown = format!("{cut:?}");
    if cut.len() < s.len() {
        shown.push('…');
    }
    shown
}
